//! The history: every request a client sent and the answer it got, as the client saw it. The
//! checker judges this (and PostgreSQL), never the service's own view.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Apply,
    Position,
}

#[derive(Debug, Clone)]
pub struct Op {
    pub user: i64,
    pub instance: usize,
    pub kind: Kind,
    /// Taken just before the request left and just after the answer was read, so "A received
    /// before B sent" in these numbers implies it in reality.
    pub sent: Instant,
    pub received: Instant,
    /// None: no answer (connection refused or reset, timeout).
    pub status: Option<u16>,
    /// The problem `code` of an error answer.
    pub code: Option<String>,
    /// The `position` and `status` of a 200/202 body.
    pub position: Option<i64>,
    pub state: Option<String>,
    /// When the run started, to print offsets.
    pub origin: Instant,
}

impl Op {
    /// An application answered with a place in line (202 new, 200 again).
    pub fn told(&self) -> Option<i64> {
        let admitted = matches!(self.status, Some(200 | 202));
        (self.kind == Kind::Apply && admitted).then_some(self.position?)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |i: Instant| (i - self.origin).as_secs_f64();
        let kind = match self.kind {
            Kind::Apply => "apply",
            Kind::Position => "position",
        };
        write!(
            f,
            "+{:.3}s..+{:.3}s user {} instance {} {kind} ",
            at(self.sent),
            at(self.received),
            self.user,
            self.instance
        )?;
        match self.status {
            None => write!(f, "no answer")?,
            Some(s) => write!(f, "{s}")?,
        }
        for part in [&self.code, &self.state].into_iter().flatten() {
            write!(f, " {part}")?;
        }
        if let Some(p) = self.position {
            write!(f, " @{p}")?;
        }
        Ok(())
    }
}

/// Shared by every client of a run.
#[derive(Clone)]
pub struct History {
    pub origin: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl History {
    pub fn new(origin: Instant) -> Self {
        Self {
            origin,
            ops: Arc::default(),
        }
    }

    pub fn record(&self, op: Op) {
        self.ops.lock().unwrap().push(op);
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }
}
