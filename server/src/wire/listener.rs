//! Accepting clients: SSLRequest/GSSENCRequest negotiation, TLS, the connection limit, the
//! frame guard, then pgwire's message loop with Shoal's handlers, one task per connection.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pgwire::api::{ClientInfo, DefaultClient, PgWireConnectionState};
use pgwire::messages::PgWireFrontendMessage;
use pgwire::tokio::server::{process_error, process_message, PgWireMessageServerCodec};
use pgwire::tokio::tokio_rustls::rustls;
use pgwire::tokio::TlsAcceptor;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

use super::auth::{RegistryPids, Startup, TrustStartup};
use super::coalesce::CoalescedWrites;
use super::guard::{error_frame, FrameGuard};
use super::Connection;
use crate::config::AuthMode;
use crate::node::Node;

const SSL_REQUEST: u32 = 80877103;
const GSSENC_REQUEST: u32 = 80877104;
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Loads a rustls acceptor from PEM files.
pub fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> io::Result<TlsAcceptor> {
    let certs = rustls_pemfile::certs(&mut io::BufReader::new(std::fs::File::open(cert)?))
        .collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut io::BufReader::new(std::fs::File::open(key)?))?
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no private key in PEM file"))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

pub async fn serve(node: Arc<Node>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    let open = Arc::new(AtomicUsize::new(0));
    let tls_cert_pem = node
        .args
        .tls_cert
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
        .map(Arc::new);
    loop {
        let (socket, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let node = node.clone();
        let tls = tls.clone();
        let open = open.clone();
        let pem = tls_cert_pem.clone();
        tokio::spawn(async move {
            let count = open.fetch_add(1, Ordering::SeqCst) + 1;
            node.metrics.connections.inc();
            node.metrics.connections_total.inc();
            let result = if count > node.args.max_connections {
                refuse(socket, "53300", "sorry, too many clients already").await
            } else {
                handle(node.clone(), socket, addr, tls, pem).await
            };
            if let Err(e) = result {
                tracing::debug!(%addr, error = %e, "connection ended with an error");
            }
            node.metrics.connections.dec();
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

async fn refuse(mut socket: TcpStream, code: &str, message: &str) -> io::Result<()> {
    socket
        .write_all(&error_frame("FATAL", code, message))
        .await?;
    socket.shutdown().await
}

/// Answers SSLRequest/GSSENCRequest; returns whether the client asked for TLS (and we agreed).
async fn negotiate(socket: &mut TcpStream, tls_available: bool) -> io::Result<bool> {
    let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
    loop {
        let mut head = [0u8; 8];
        let n = loop {
            let n = tokio::time::timeout_at(deadline, socket.peek(&mut head))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "startup timeout"))??;
            if n == 0 || n >= 8 {
                break n;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        if n < 8 {
            return Ok(false);
        }
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if len != 8 || (code != SSL_REQUEST && code != GSSENC_REQUEST) {
            return Ok(false);
        }
        socket.read_exact(&mut head).await?;
        if code == SSL_REQUEST && tls_available {
            socket.write_all(b"S").await?;
            return Ok(true);
        }
        socket.write_all(b"N").await?;
    }
}

async fn handle(
    node: Arc<Node>,
    mut socket: TcpStream,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    pem: Option<Arc<Vec<u8>>>,
) -> io::Result<()> {
    socket.set_nodelay(true)?;
    let wants_tls = negotiate(&mut socket, tls.is_some()).await?;
    match (wants_tls, tls) {
        (true, Some(acceptor)) => {
            let stream = acceptor.accept(socket).await?;
            run(node, stream, addr, true, pem).await
        }
        _ if node.args.tls_required => {
            refuse(
                socket,
                "28000",
                "this server requires TLS (sslmode=require)",
            )
            .await
        }
        _ => run(node, socket, addr, false, pem).await,
    }
}

/// pgwire's message loop over a guarded stream.
async fn run<S>(
    node: Arc<Node>,
    stream: S,
    addr: SocketAddr,
    secure: bool,
    pem: Option<Arc<Vec<u8>>>,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    let guarded = CoalescedWrites::new(FrameGuard::new(stream, node.args.max_message_bytes));
    let client = DefaultClient::new(addr, secure);
    let mut socket = Framed::new(guarded, PgWireMessageServerCodec::new(client));
    socket.set_state(PgWireConnectionState::AwaitingStartup);

    let pids = Arc::new(RegistryPids(node.sessions.clone()));
    let startup = Arc::new(match node.args.auth {
        AuthMode::Scram => Startup::scram(
            node.meta.clone(),
            pids,
            node.connections.clone(),
            // Channel binding (SCRAM-SHA-256-PLUS) exists only over TLS.
            pem.as_deref().filter(|_| secure).map(|v| v.as_slice()),
        ),
        AuthMode::Trust => Startup::Trust(TrustStartup {
            pids,
            connections: node.connections.clone(),
        }),
    });
    let handlers = Arc::new(Connection::new(node.clone()));
    let cancel = Arc::new(pgwire::api::cancel::DefaultCancelHandler::new(
        node.connections.clone(),
    ));
    let served = answer_messages(&mut socket, startup, handlers, cancel).await;
    // What the connection still holds (a last error, say) goes out before it closes.
    let _ = socket.close().await;
    served
}

/// Reads and answers messages until the client leaves or the connection fails.
async fn answer_messages<S>(
    socket: &mut Framed<CoalescedWrites<FrameGuard<S>>, PgWireMessageServerCodec<super::Prepared>>,
    startup: Arc<Startup>,
    handlers: Arc<Connection>,
    cancel: Arc<pgwire::api::cancel::DefaultCancelHandler>,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    let startup_deadline = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(startup_deadline);
    loop {
        let in_startup = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let msg = if in_startup {
            tokio::select! {
                _ = &mut startup_deadline => None,
                msg = socket.next() => msg,
            }
        } else {
            socket.next().await
        };
        let msg = match msg {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                let info = pgwire::error::ErrorInfo::new(
                    "FATAL".into(),
                    "08P01".into(),
                    format!("invalid frontend message: {e}"),
                );
                let _ = socket
                    .send(pgwire::messages::PgWireBackendMessage::ErrorResponse(
                        info.into(),
                    ))
                    .await;
                break;
            }
            None => break,
        };
        if matches!(msg, PgWireFrontendMessage::Terminate(_)) {
            break;
        }
        let is_extended = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => msg.is_extended_query(),
        };
        if let Err(e) = process_message(
            msg,
            socket,
            startup.clone(),
            handlers.clone(),
            handlers.clone(),
            handlers.clone(),
            cancel.clone(),
        )
        .await
        {
            process_error(socket, e, is_extended).await?;
        }
    }
    Ok(())
}
