//! Cuts off connections that stop sending: a client that opens a request and never finishes
//! its headers (slowloris), or an idle keep-alive. poem's own idle timeout cannot do this: it
//! asks hyper to shut down gracefully, and hyper waits for the unfinished request forever.
//! Here the socket's read itself fails once it has waited `idle` for a byte.

use std::io::Result as IoResult;
use std::pin::Pin;
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio_io_timeout::TimeoutStream;

pub struct IdleCutoff<A> {
    inner: A,
    idle: Duration,
}

impl<A> IdleCutoff<A> {
    pub fn new(inner: A, idle: Duration) -> Self {
        Self { inner, idle }
    }
}

impl<A: Acceptor> Acceptor for IdleCutoff<A> {
    type Io = Pin<Box<TimeoutStream<A::Io>>>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> IoResult<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, scheme) = self.inner.accept().await?;
        let mut io = TimeoutStream::new(io);
        io.set_read_timeout(Some(self.idle));
        Ok((Box::pin(io), local, remote, scheme))
    }
}
