//! What a PostgreSQL client asks of its server, read off the wire by a [`super::TcpProxy`]:
//! how many times each SQL text was executed, whoever ran it.
//!
//! The frontend side of the protocol (v3) only: an untyped startup message (after an optional
//! SSLRequest or GSSENCRequest the server refused), then messages of 1 type byte, a big-endian
//! `i32` length that counts itself, and a body. An execution is a simple query (`Q`) or a Bind
//! (`B`) of a statement Parsed (`P`) earlier on the same connection: sqlx prepares a statement
//! once per connection and Binds it every time; an unnamed statement is Parsed and Bound each
//! time, and counts once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Protocol codes of the untyped messages a connection may start with.
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;
const PROTOCOL_3: i32 = 196_608;
/// No startup message is this long; a TLS handshake read as one is.
const MAX_STARTUP: usize = 10_000;

/// Executions per SQL text, shared by every connection through one proxy.
#[derive(Clone, Default)]
pub struct PgStatements {
    inner: Arc<Mutex<Counts>>,
}

#[derive(Default)]
struct Counts {
    executions: HashMap<String, u64>,
    /// Connections whose traffic could not be read (TLS after an accepted SSLRequest).
    unreadable: u64,
}

impl PgStatements {
    /// How many times `sql` (the exact text) has been executed so far.
    pub fn executions(&self, sql: &str) -> u64 {
        let counts = self.inner.lock().unwrap();
        counts.executions.get(sql).copied().unwrap_or(0)
    }

    /// Connections the proxy could not read: their statements are not counted.
    pub fn unreadable(&self) -> u64 {
        self.inner.lock().unwrap().unreadable
    }

    /// A reader for one new connection.
    pub fn connection(&self) -> FrontendReader {
        FrontendReader {
            counts: self.clone(),
            phase: Phase::Startup,
            buf: Vec::new(),
            prepared: HashMap::new(),
        }
    }

    fn executed(&self, sql: &str) {
        *self
            .inner
            .lock()
            .unwrap()
            .executions
            .entry(sql.to_owned())
            .or_default() += 1;
    }
}

#[derive(PartialEq)]
enum Phase {
    /// Untyped messages: SSLRequest, GSSENCRequest, the startup message.
    Startup,
    /// Typed messages.
    Running,
    /// Nothing more is read (encrypted, a CancelRequest, or not PostgreSQL).
    Done,
}

/// Reads one connection's frontend bytes, chunk by chunk, as the proxy passes them on.
pub struct FrontendReader {
    counts: PgStatements,
    phase: Phase,
    /// Bytes of a message not complete yet.
    buf: Vec<u8>,
    /// Statement name → SQL, as Parsed on this connection ("" is the unnamed statement).
    prepared: HashMap<String, String>,
}

impl FrontendReader {
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.phase == Phase::Done {
            return;
        }
        self.buf.extend_from_slice(bytes);
        loop {
            // The length follows the type byte, or opens an untyped message.
            let at = usize::from(self.phase == Phase::Running);
            let Some(len) = self.buf.get(at..at + 4) else {
                return;
            };
            let len = i32::from_be_bytes(len.try_into().unwrap());
            let len = usize::try_from(len).unwrap_or(0);
            if len < 4 || (self.phase == Phase::Startup && len > MAX_STARTUP) {
                self.give_up(true);
                return;
            }
            if self.buf.len() < at + len {
                return;
            }
            let message: Vec<u8> = self.buf.drain(..at + len).collect();
            match self.phase {
                Phase::Startup => self.startup(&message[4..]),
                _ => self.typed(message[0], &message[5..]),
            }
            if self.phase == Phase::Done {
                return;
            }
        }
    }

    fn startup(&mut self, body: &[u8]) {
        match body
            .get(..4)
            .map(|c| i32::from_be_bytes(c.try_into().unwrap()))
        {
            // The server's answer ('N' or 'S') is not read: plaintext follows or this is TLS,
            // and TLS cannot pass for a startup message (see MAX_STARTUP).
            Some(SSL_REQUEST | GSSENC_REQUEST) => {}
            Some(PROTOCOL_3) => self.phase = Phase::Running,
            // A CancelRequest carries no statement; anything else is not understood.
            Some(CANCEL_REQUEST) => self.give_up(false),
            _ => self.give_up(true),
        }
    }

    fn typed(&mut self, kind: u8, body: &[u8]) {
        let mut fields = body.split(|b| *b == 0).map(String::from_utf8_lossy);
        match kind {
            b'Q' => self.counts.executed(&fields.next().unwrap_or_default()),
            b'P' => {
                let name = fields.next().unwrap_or_default().into_owned();
                let sql = fields.next().unwrap_or_default().into_owned();
                self.prepared.insert(name, sql);
            }
            b'B' => {
                let _portal = fields.next();
                let name = fields.next().unwrap_or_default();
                if let Some(sql) = self.prepared.get(&*name) {
                    self.counts.executed(sql);
                }
            }
            _ => {}
        }
    }

    fn give_up(&mut self, unreadable: bool) {
        self.phase = Phase::Done;
        self.buf = Vec::new();
        if unreadable {
            self.counts.inner.lock().unwrap().unreadable += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn untyped(code: i32, rest: &[u8]) -> Vec<u8> {
        let len = (8 + rest.len()) as i32;
        [&len.to_be_bytes()[..], &code.to_be_bytes(), rest].concat()
    }

    fn typed(kind: u8, fields: &[&str], tail: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        for field in fields {
            body.extend_from_slice(field.as_bytes());
            body.push(0);
        }
        body.extend_from_slice(tail);
        let len = (4 + body.len()) as i32;
        [&[kind][..], &len.to_be_bytes(), &body].concat()
    }

    #[test]
    fn counts_simple_queries_and_binds_of_named_and_unnamed_statements() {
        let statements = PgStatements::default();
        let mut conn = statements.connection();
        let wire = [
            untyped(SSL_REQUEST, &[]),
            untyped(PROTOCOL_3, b"user\0postgres\0\0"),
            typed(b'Q', &["SELECT 1"], &[]),
            // Named: Parsed once, Bound twice (with a Describe, Execute and Sync between).
            typed(b'P', &["sqlx_s_1", "SELECT $1"], &[0, 0]),
            typed(b'D', &["Ssqlx_s_1"], &[]),
            typed(b'S', &[], &[]),
            typed(
                b'B',
                &["", "sqlx_s_1"],
                &[0, 0, 0, 1, 0, 0, 0, 1, b'7', 0, 0],
            ),
            typed(b'E', &[""], &[0, 0, 0, 0]),
            typed(
                b'B',
                &["", "sqlx_s_1"],
                &[0, 0, 0, 1, 0, 0, 0, 1, b'8', 0, 0],
            ),
            // Unnamed: Parsed and Bound each time.
            typed(b'P', &["", "SELECT 2"], &[0, 0]),
            typed(b'B', &["", ""], &[0, 0, 0, 0, 0, 0]),
            typed(b'P', &["", "SELECT 3"], &[0, 0]),
            typed(b'B', &["", ""], &[0, 0, 0, 0, 0, 0]),
        ]
        .concat();
        // Chunks that split messages anywhere, as TCP may.
        for chunk in wire.chunks(3) {
            conn.feed(chunk);
        }
        assert_eq!(statements.executions("SELECT 1"), 1);
        assert_eq!(statements.executions("SELECT $1"), 2);
        assert_eq!(statements.executions("SELECT 2"), 1);
        assert_eq!(statements.executions("SELECT 3"), 1);
        assert_eq!(statements.unreadable(), 0);
        // Names belong to their connection.
        let mut other = statements.connection();
        other.feed(&untyped(PROTOCOL_3, b"\0"));
        other.feed(&typed(b'B', &["", "sqlx_s_1"], &[0, 0, 0, 0, 0, 0]));
        assert_eq!(statements.executions("SELECT $1"), 2);
    }

    #[test]
    fn a_connection_that_turned_to_tls_is_reported_unreadable() {
        let statements = PgStatements::default();
        let mut conn = statements.connection();
        conn.feed(&untyped(SSL_REQUEST, &[]));
        // The server said 'S': a TLS ClientHello follows.
        conn.feed(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]);
        conn.feed(&typed(b'Q', &["SELECT 1"], &[]));
        assert_eq!(statements.unreadable(), 1);
        assert_eq!(statements.executions("SELECT 1"), 0);
    }
}
