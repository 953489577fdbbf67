//! The PostgreSQL wire front end: pgwire handlers that turn protocol messages into session
//! calls, and session outcomes back into protocol messages.

pub mod auth;
pub mod coalesce;
pub mod encode;
pub mod guard;
pub mod listener;
mod numeric;
pub mod params;

use std::fmt::Debug;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::Statement;
use futures::{stream, Sink, SinkExt, StreamExt};
use parking_lot::Mutex;
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{send_describe_response, ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    CopyResponse, DescribePortalResponse, DescribeStatementResponse, FieldInfo, QueryResponse,
    Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, Type, DEFAULT_NAME};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::data::{NoData, ParameterDescription};
use pgwire::messages::extendedquery::{Describe, Parse, TARGET_TYPE_BYTE_STATEMENT};
use pgwire::messages::PgWireBackendMessage;

use crate::error::ServerError;
use crate::node::{now_micros, Node, SessionEntry};
use crate::session::{cursor, Outcome, Session};

/// A statement prepared with Parse, with its plan cached for reuse until the catalog changes.
#[derive(Clone)]
pub struct Prepared {
    pub sql: String,
    pub stmt: Statement,
    plan: Arc<Mutex<Option<(u64, LogicalPlan)>>>,
}

pub struct ShoalParser;

fn parse_statements(sql: &str) -> Result<Vec<Statement>, ServerError> {
    shoal_planner::parse_sql(sql).map_err(|e| ServerError::Syntax(e.to_string()))
}

#[async_trait]
impl QueryParser for ShoalParser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut stmts = parse_statements(sql).map_err(|e| e.to_pgwire())?;
        match stmts.len() {
            0 => Ok(None),
            1 => Ok(Some(Prepared {
                sql: sql.to_string(),
                stmt: stmts.remove(0),
                plan: Arc::new(Mutex::new(None)),
            })),
            _ => Err(ServerError::Syntax(
                "cannot insert multiple commands into a prepared statement".into(),
            )
            .to_pgwire()),
        }
    }

    fn get_parameter_types(&self, _stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(vec![])
    }

    fn get_result_schema(
        &self,
        _stmt: &Prepared,
        _format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(vec![])
    }
}

/// All handlers of one connection; the session is created once startup has finished.
pub struct Connection {
    node: Arc<Node>,
    session: OnceLock<Arc<Session>>,
    parser: Arc<ShoalParser>,
}

impl Connection {
    pub fn new(node: Arc<Node>) -> Self {
        Connection {
            node,
            session: OnceLock::new(),
            parser: Arc::new(ShoalParser),
        }
    }

    fn session<C: ClientInfo>(&self, client: &C) -> Arc<Session> {
        self.session
            .get_or_init(|| {
                let meta = client.metadata();
                let (pid, secret) = client.pid_and_secret_key();
                let addr = client.socket_addr();
                let entry = Arc::new(SessionEntry {
                    pid,
                    user: meta.get("user").cloned().unwrap_or_default(),
                    application_name: parking_lot::Mutex::new(
                        meta.get("application_name").cloned().unwrap_or_default(),
                    ),
                    client_addr: addr.ip().to_string(),
                    client_port: addr.port() as i32,
                    backend_start: now_micros(),
                    secret: parking_lot::Mutex::new(Some(secret)),
                    activity: parking_lot::Mutex::new(("idle".into(), String::new(), None)),
                });
                self.node.sessions.register(entry.clone());
                let session = Arc::new(Session::new(self.node.clone(), entry));
                apply_startup_settings(&session, meta);
                if let Some(app) = session.settings.get("application_name") {
                    *session.entry.application_name.lock() = app;
                }
                session
            })
            .clone()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(s) = self.session.get() {
            self.node.sessions.remove(s.entry.pid);
        }
    }
}

/// Startup parameters (and `options=-c name=value`) become session settings.
fn apply_startup_settings(session: &Session, meta: &std::collections::HashMap<String, String>) {
    for (k, v) in meta {
        match k.as_str() {
            "user" | "database" | "replication" => {}
            "options" => {
                let mut words = v.split_whitespace().peekable();
                while let Some(w) = words.next() {
                    let assignment = if w == "-c" {
                        words.next().map(str::to_string)
                    } else {
                        w.strip_prefix("-c")
                            .or_else(|| w.strip_prefix("--"))
                            .map(str::to_string)
                    };
                    if let Some((name, value)) =
                        assignment.as_deref().and_then(|a| a.split_once('='))
                    {
                        let _ = session.settings.set(&name.replace('-', "_"), value);
                    }
                }
            }
            other => {
                let _ = session.settings.set(other, v);
            }
        }
    }
}

fn to_pg(e: ServerError) -> PgWireError {
    e.to_pgwire()
}

/// Turns a session outcome into a pgwire response.
async fn respond(outcome: Outcome, format: &Format) -> PgWireResult<Response> {
    Ok(match outcome {
        Outcome::Rows {
            schema,
            stream,
            tag,
        } => {
            let fields = Arc::new(encode::fields_for(&schema, format)?);
            let f = fields.clone();
            let rows = stream
                .map(move |batch| {
                    let rows: Box<dyn Iterator<Item = PgWireResult<_>> + Send + Sync> = match batch
                    {
                        Ok(b) => encode::encode(f.clone(), b),
                        Err(e) => Box::new(std::iter::once(Err(to_pg(e.into())))),
                    };
                    stream::iter(rows)
                })
                .flatten();
            let mut response = QueryResponse::new(fields, rows);
            response.set_command_tag(tag);
            Response::Query(response)
        }
        Outcome::Command { tag, rows } => {
            let t = Tag::new(&tag);
            Response::Execution(match rows {
                Some(r) => t.with_rows(r),
                None => t,
            })
        }
        Outcome::TxnStart(tag) => Response::TransactionStart(Tag::new(&tag)),
        Outcome::TxnEnd(tag) => Response::TransactionEnd(Tag::new(&tag)),
        Outcome::CopyIn { columns } => {
            Response::CopyIn(CopyResponse::new(0, columns, stream::empty()))
        }
        Outcome::CopyOut { columns, lines, .. } => Response::CopyOut(CopyResponse::new(
            0,
            columns,
            stream::iter(lines.into_iter().map(|l| Ok(CopyData::new(l)))),
        )),
    })
}

#[async_trait]
impl SimpleQueryHandler for Connection {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.session(client);
        let stmts = match parse_statements(query) {
            Ok(s) => s,
            Err(e) => {
                session.note_error(&e);
                return Err(to_pg(e));
            }
        };
        let mut responses = Vec::with_capacity(stmts.len());
        if stmts.is_empty() {
            responses.push(Response::EmptyQuery);
        }
        for stmt in stmts {
            let is_discard = matches!(stmt, Statement::Discard { .. });
            match session.execute(query, &stmt, None).await {
                Ok(outcome) => {
                    if is_discard {
                        // DISCARD ALL also drops prepared statements and portals.
                        client.portal_store().clear_portals();
                    }
                    let is_copy = matches!(outcome, Outcome::CopyIn { .. });
                    responses.push(respond(outcome, &Format::UnifiedText).await?);
                    if is_copy {
                        break;
                    }
                }
                Err(e) => {
                    // Like PostgreSQL, the rest of a multi-statement string is skipped.
                    responses.push(Response::Error(Box::new(ErrorInfo::new(
                        "ERROR".into(),
                        e.sqlstate().into(),
                        e.message(),
                    ))));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

fn param_types_of(plan: &LogicalPlan) -> Vec<Option<DataType>> {
    let Ok(types) = plan.get_parameter_types() else {
        return vec![];
    };
    let mut indexed: Vec<(usize, Option<DataType>)> = types
        .into_iter()
        .filter_map(|(k, v)| {
            k.trim_start_matches('$')
                .parse::<usize>()
                .ok()
                .map(|i| (i, v))
        })
        .collect();
    indexed.sort_by_key(|(i, _)| *i);
    let n = indexed.last().map(|(i, _)| *i).unwrap_or(0);
    let mut out = vec![None; n];
    for (i, t) in indexed {
        if i >= 1 {
            out[i - 1] = t;
        }
    }
    out
}

/// Statements planned by DataFusion, whose parameter types the plan infers. A DECLARE is
/// planned as its query.
fn plannable(stmt: &Statement) -> bool {
    matches!(
        stmt,
        Statement::Query(_)
            | Statement::Insert(_)
            | Statement::Update(_)
            | Statement::Delete(_)
            | Statement::Explain { .. }
    ) || cursor::declared_query(stmt).is_some()
}

fn has_returning(stmt: &Statement) -> bool {
    match stmt {
        Statement::Insert(i) => i.returning.is_some(),
        Statement::Update(u) => u.returning.is_some(),
        Statement::Delete(d) => d.returning.is_some(),
        _ => false,
    }
}

impl Connection {
    /// The statement's plan, cached until the catalog changes.
    async fn cached_plan(
        &self,
        session: &Session,
        p: &Prepared,
    ) -> Result<LogicalPlan, ServerError> {
        // Plans made against a block's private catalog are not cached: its version numbers
        // are not the shared catalog's.
        if session.meta.has_pending() {
            return session.plan_only(&p.stmt).await;
        }
        let version = self.node.meta.catalog().version;
        if let Some((v, plan)) = &*p.plan.lock() {
            if *v == version {
                return Ok(plan.clone());
            }
        }
        let plan = session.plan_only(&p.stmt).await?;
        *p.plan.lock() = Some((version, plan.clone()));
        Ok(plan)
    }

    /// Result columns of a statement without running it.
    async fn result_schema(
        &self,
        session: &Session,
        p: &Prepared,
    ) -> Result<Option<Schema>, ServerError> {
        if let Statement::ShowVariable { variable } = &p.stmt {
            let words: Vec<String> = variable.iter().map(|i| i.value.to_lowercase()).collect();
            let name = session.settings.name_of(&words).replace(' ', "_");
            return Ok(Some(Schema::new(vec![Field::new(
                name,
                DataType::Utf8,
                true,
            )])));
        }
        if let Some(name) = cursor::fetched_cursor(&p.stmt) {
            return Ok(Some(session.cursor_schema(&name)?.as_ref().clone()));
        }
        if !plannable(&p.stmt) || matches!(p.stmt, Statement::Declare { .. }) {
            return Ok(None);
        }
        if matches!(
            p.stmt,
            Statement::Explain {
                verbose: false,
                format: None,
                ..
            }
        ) {
            return Ok(Some(Schema::new(vec![Field::new(
                "QUERY PLAN",
                DataType::Utf8,
                false,
            )])));
        }
        if has_returning(&p.stmt) {
            return Ok(Some(session.returning_schema(&p.stmt).await?));
        }
        let plan = self.cached_plan(session, p).await?;
        if matches!(
            p.stmt,
            Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)
        ) {
            return Ok(None);
        }
        Ok(Some(session.result_columns(&plan)))
    }
}

/// PostgreSQL also exposes a DECLAREd cursor as a protocol portal of the same name: psycopg 3
/// learns the columns of its server-side cursors by describing that portal. Executing it
/// fetches the rest of the cursor.
async fn register_cursor_portal<C>(client: &mut C, name: String) -> PgWireResult<()>
where
    C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::PortalStore: PortalStore<Statement = Prepared>,
{
    let sql = format!("FETCH ALL FROM \"{}\"", name.replace('"', "\"\""));
    let parse = Parse::new(None, sql, vec![]);
    if let Some(statement) = StoredStatement::parse(client, &parse, ShoalParser).await? {
        client
            .portal_store()
            .put_portal(Arc::new(Portal::new_cursor(name, Arc::new(statement))));
    }
    Ok(())
}

#[async_trait]
impl ExtendedQueryHandler for Connection {
    type Statement = Prepared;
    type QueryParser = ShoalParser;

    fn query_parser(&self) -> Arc<ShoalParser> {
        self.parser.clone()
    }

    /// pgwire answers Describe of a statement that has parameters but returns no rows (an
    /// INSERT) with an empty RowDescription; PostgreSQL sends NoData, and pgJDBC's
    /// executeUpdate fails on the former ("A result was returned when none was expected").
    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if message.target_type == TARGET_TYPE_BYTE_STATEMENT {
            let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
            if let Some(Entry::Value(stmt)) = client.portal_store().get_statement(name) {
                let described = self.do_describe_statement(client, &stmt).await?;
                if described.fields.is_empty() {
                    let oids = described.parameters.iter().map(|t| t.oid()).collect();
                    client
                        .send(PgWireBackendMessage::ParameterDescription(
                            ParameterDescription::new(oids),
                        ))
                        .await?;
                    client
                        .send(PgWireBackendMessage::NoData(NoData::new()))
                        .await?;
                    return Ok(());
                }
                return send_describe_response(client, &described).await;
            }
        }
        self._on_describe(client, message).await
    }

    async fn do_describe_statement<C>(
        &self,
        client: &mut C,
        target: &StoredStatement<Prepared>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.session(client);
        let p = &target.statement;
        let inferred = if plannable(&p.stmt) {
            param_types_of(&self.cached_plan(&session, p).await.map_err(to_pg)?)
        } else {
            vec![]
        };
        let params = params::announced_types(
            &target.parameter_types,
            &params::cast_parameter_types(&p.stmt),
            &inferred,
        );
        let fields = match self.result_schema(&session, p).await.map_err(to_pg)? {
            Some(schema) => encode::fields_for(&schema, &Format::UnifiedText)?,
            None => vec![],
        };
        Ok(DescribeStatementResponse::new(params, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.session(client);
        let fields = match self
            .result_schema(&session, &portal.statement.statement)
            .await
            .map_err(to_pg)?
        {
            Some(schema) => encode::fields_for(&schema, &portal.result_column_format)?,
            None => vec![],
        };
        Ok(DescribePortalResponse::new(fields))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.session(client);
        let p = &portal.statement.statement;
        let params = if portal.parameter_len() > 0 {
            let plan = self.cached_plan(&session, p).await.map_err(to_pg)?;
            let inferred = param_types_of(&plan);
            let cast = params::cast_parameter_types(&p.stmt);
            Some(params::decode_parameters(portal, &cast, &inferred).map_err(to_pg)?)
        } else {
            None
        };
        let outcome = session
            .execute(&p.sql, &p.stmt, params)
            .await
            .map_err(to_pg)?;
        if let Some(name) = cursor::declared_name(&p.stmt) {
            register_cursor_portal(client, name).await?;
        }
        respond(outcome, &portal.result_column_format).await
    }
}

#[async_trait]
impl CopyHandler for Connection {
    async fn on_copy_data<C>(&self, client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.session(client);
        let mut guard = session.copy_in.lock().await;
        let Some(copy) = guard.as_mut() else {
            return Ok(());
        };
        if let Err(e) = session.copy_data(copy, &copy_data.data).await {
            session.copy_abort(copy).await;
            *guard = None;
            // The rest of the stream is ignored: the error is reported after CopyDone.
            session.set_copy_error(e);
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.session(client);
        if let Some(e) = session.take_copy_error() {
            return Err(to_pg(e));
        }
        let Some(mut copy) = session.copy_in.lock().await.take() else {
            return Err(to_pg(ServerError::Protocol("no COPY in progress".into())));
        };
        match session.copy_done(&mut copy).await {
            Ok(n) => {
                client
                    .send(PgWireBackendMessage::CommandComplete(
                        Tag::new("COPY").with_rows(n as usize).into(),
                    ))
                    .await?;
                Ok(())
            }
            Err(e) => {
                session.copy_abort(&mut copy).await;
                Err(to_pg(e))
            }
        }
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.session(client);
        if let Some(mut copy) = session.copy_in.lock().await.take() {
            session.copy_abort(&mut copy).await;
        }
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            "57014".into(),
            format!("COPY from stdin failed: {}", fail.message),
        )))
    }
}
