//! Authentication: SCRAM-SHA-256 against the catalog's users (salted hashes only), or trust
//! for local development; and the ParameterStatus values every client gets at startup.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramAuth, SCRAM_ITERATIONS};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata, AuthSource,
    LoginInfo, Password, ServerParameterProvider, StartupHandler,
};
use pgwire::api::{ClientInfo, ConnectionManager, PidSecretKeyGenerator};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::SecretKey;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use shoal_coord::{MetaStore, UserDef};

use crate::node::SessionRegistry;
use crate::session::settings::{SERVER_VERSION, SERVER_VERSION_NUM};

/// A user record holding only the SCRAM salted password.
pub fn new_user(name: &str, password: &str) -> UserDef {
    let salt: [u8; 16] = rand::random();
    UserDef {
        name: name.to_string(),
        oid: 0,
        superuser: true,
        scram_salt: salt.to_vec(),
        scram_salted_password: gen_salted_password(password, &salt, SCRAM_ITERATIONS),
        scram_iterations: SCRAM_ITERATIONS as u32,
    }
}

/// Looks users up in the catalog.
pub struct CatalogAuthSource {
    pub meta: Arc<dyn MetaStore>,
}

impl Debug for CatalogAuthSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CatalogAuthSource")
    }
}

#[async_trait]
impl AuthSource for CatalogAuthSource {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        match self.meta.catalog().users.get(user) {
            Some(u) => Ok(Password::new(
                Some(u.scram_salt.clone()),
                u.scram_salted_password.clone(),
            )),
            // Same error as a wrong password: do not reveal which user names exist.
            None => Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "28P01".into(),
                format!("password authentication failed for user \"{user}\""),
            )))),
        }
    }
}

/// ParameterStatus values sent after authentication.
pub struct ShoalParameters;

impl ServerParameterProvider for ShoalParameters {
    fn server_parameters<C>(&self, client: &C) -> Option<HashMap<String, String>>
    where
        C: ClientInfo,
    {
        let meta = client.metadata();
        let user = meta.get("user").cloned().unwrap_or_default();
        let mut p = HashMap::new();
        for (k, v) in [
            ("server_version", SERVER_VERSION),
            ("server_version_num", SERVER_VERSION_NUM),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("integer_datetimes", "on"),
            ("IntervalStyle", "postgres"),
            ("standard_conforming_strings", "on"),
            ("TimeZone", "UTC"),
            ("is_superuser", "on"),
            ("default_transaction_read_only", "off"),
            ("in_hot_standby", "off"),
            ("scram_iterations", "4096"),
        ] {
            p.insert(k.to_string(), v.to_string());
        }
        p.insert("session_authorization".into(), user);
        p.insert(
            "application_name".into(),
            meta.get("application_name").cloned().unwrap_or_default(),
        );
        Some(p)
    }
}

/// Hands out backend pids that `pg_stat_activity` and `pg_backend_pid()` agree on.
pub struct RegistryPids(pub Arc<SessionRegistry>);

impl PidSecretKeyGenerator for RegistryPids {
    fn generate(&self, _client: &dyn ClientInfo) -> (i32, SecretKey) {
        (self.0.allocate_pid(), SecretKey::I32(rand::random::<i32>()))
    }
}

/// Accepts every client without a password (`--auth trust`).
pub struct TrustStartup {
    pub pids: Arc<RegistryPids>,
    pub connections: Arc<ConnectionManager>,
}

/// The startup handler in use on a connection.
pub enum Startup {
    Scram(SASLAuthStartupHandler<ShoalParameters>),
    Trust(TrustStartup),
}

impl Startup {
    pub fn scram(
        meta: Arc<dyn MetaStore>,
        pids: Arc<RegistryPids>,
        connections: Arc<ConnectionManager>,
        tls_cert_pem: Option<&[u8]>,
    ) -> Self {
        let mut scram = ScramAuth::new(Arc::new(CatalogAuthSource { meta }));
        scram.set_iterations(SCRAM_ITERATIONS);
        if let Some(pem) = tls_cert_pem {
            // Enables SCRAM-SHA-256-PLUS (channel binding) for TLS clients.
            let _ = scram.configure_certificate(pem);
        }
        Startup::Scram(
            SASLAuthStartupHandler::new(Arc::new(ShoalParameters))
                .with_scram(scram)
                .with_pid_secret_key_generator(pids)
                .with_connection_manager(connections),
        )
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Scram(h) => h.on_startup(client, message).await,
            Startup::Trust(t) => {
                if let PgWireFrontendMessage::Startup(ref startup) = message {
                    protocol_negotiation(client, startup).await?;
                    save_startup_parameters_to_metadata(client, startup);
                    let (pid, secret) = t.pids.generate(client);
                    client.set_pid_and_secret_key(pid, secret.clone());
                    let (handle, guard) = t.connections.register(pid, secret);
                    client.session_extensions().insert(handle);
                    client.session_extensions().insert(guard);
                    finish_authentication(client, &ShoalParameters).await?;
                }
                Ok(())
            }
        }
    }
}
