use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::pg_statements::{FrontendReader, PgStatements};

/// How the proxy treats traffic right now.
#[derive(Debug, Clone, Copy, Default)]
struct Flow {
    /// New connections are dropped (`cut`).
    refused: bool,
    /// Bytes already read wait here, connections stay open (`hold`): the peers see a stall,
    /// not an error, the way a paused process or a congested link looks.
    held: bool,
    /// Replies (server to client) wait here; requests pass (`hold_replies`): the server acts
    /// on a request whose answer the client never gets, as with a link that died after it.
    replies_held: bool,
    /// Added before every chunk is passed on, each way.
    latency: Duration,
}

/// A TCP forwarder a test can cut, hold, slow down and restore, to make a real server
/// unreachable or slow for one application without touching it for every other test.
pub struct TcpProxy {
    pub port: u16,
    flow: watch::Sender<Flow>,
    /// Where new connections go (`retarget` changes it).
    target: Arc<Mutex<String>>,
    /// Live forwarding tasks; aborted on `cut` so established connections die too.
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(target: impl Into<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::on(listener, target.into())
    }

    /// A proxy on a port of its own, for a server that must be told that port before it starts
    /// (a broker advertising the proxy as its address).
    pub async fn bind() -> (TcpListener, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (listener, port)
    }

    /// A proxy in front of PostgreSQL that also counts the statements its clients execute
    /// (plaintext connections only: see `PgStatements::unreadable`).
    pub async fn start_postgres(target: impl Into<String>) -> (Self, PgStatements) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let statements = PgStatements::default();
        let proxy = Self::listen(listener, target.into(), Some(statements.clone()));
        (proxy, statements)
    }

    pub fn on(listener: TcpListener, target: String) -> Self {
        Self::listen(listener, target, None)
    }

    fn listen(listener: TcpListener, target: String, statements: Option<PgStatements>) -> Self {
        let port = listener.local_addr().unwrap().port();
        let (flow, _) = watch::channel(Flow::default());
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let target = Arc::new(Mutex::new(target));
        let accept = tokio::spawn({
            let (flow, links, target) = (flow.clone(), links.clone(), target.clone());
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    if flow.borrow().refused {
                        continue; // dropped: the client sees the connection closed
                    }
                    let target = target.lock().unwrap().clone();
                    let flow = flow.subscribe();
                    let reader = statements.as_ref().map(PgStatements::connection);
                    let link = tokio::spawn(async move {
                        if let Ok(outbound) = TcpStream::connect(&target).await {
                            let (from_client, to_client) = inbound.into_split();
                            let (from_server, to_server) = outbound.into_split();
                            tokio::join!(
                                pump(from_client, to_server, flow.clone(), false, reader),
                                pump(from_server, to_client, flow, true, None),
                            );
                        }
                    });
                    links.lock().unwrap().push(link);
                }
            }
        });
        Self {
            port,
            flow,
            target,
            links,
            accept,
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every connection dies (whatever was held with it) and new ones are refused.
    pub fn cut(&self) {
        self.flow.send_modify(|f| {
            f.refused = true;
            f.held = false;
        });
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    /// Connections stay open but nothing passes either way until `restore`.
    pub fn hold(&self) {
        self.flow.send_modify(|f| f.held = true);
    }

    /// Requests pass, replies wait until `restore`.
    pub fn hold_replies(&self) {
        self.flow.send_modify(|f| f.replies_held = true);
    }

    /// From now on connections go to `target`, and every open one dies: the clients reconnect
    /// and reach another server on the same address, as after a failover behind a VIP.
    pub fn retarget(&self, target: impl Into<String>) {
        *self.target.lock().unwrap() = target.into();
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    /// Every chunk waits `latency` before it is passed on.
    pub fn slow(&self, latency: Duration) {
        self.flow.send_modify(|f| f.latency = latency);
    }

    /// Back to passing everything at once.
    pub fn restore(&self) {
        self.flow.send_replace(Flow::default());
    }
}

/// Copies one direction, honouring `flow` before passing each chunk on; `reader` sees every
/// chunk first.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut flow: watch::Receiver<Flow>,
    replies: bool,
    mut reader: Option<FrontendReader>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(reader) = reader.as_mut() {
            reader.feed(&buf[..n]);
        }
        let latency = match flow
            .wait_for(|f| !(f.held || (replies && f.replies_held)))
            .await
        {
            Ok(f) => f.latency,
            Err(_) => break,
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    to.shutdown().await.ok();
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
