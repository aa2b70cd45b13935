//! `fcfs-coupon verify`: checks an event's log through its public endpoints only (or a receipt
//! offline), the way any customer or auditor can: the checkpoint's signature, a receipt's
//! inclusion, consistency with a checkpoint saved earlier, and the whole log's order.

use anyhow::{bail, Context};
use base64::prelude::{Engine, BASE64_STANDARD};
use serde::Deserialize;
use tlog_tiles::{Checkpoint, Hash};

use super::{commitment, open_checkpoint, Leaf, LeafKind, MemoryTree};
use crate::domain::{CouponId, UserId};

/// One check's outcome, printed as one line.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.passed { "ok  " } else { "FAIL" };
        write!(f, "{verdict} {}: {}", self.name, self.detail)
    }
}

fn check(name: &'static str, outcome: anyhow::Result<String>) -> Check {
    match outcome {
        Ok(detail) => Check {
            name,
            passed: true,
            detail,
        },
        Err(e) => Check {
            name,
            passed: false,
            detail: format!("{e:#}"),
        },
    }
}

/// What a winner can keep and check, offline or against any later checkpoint: their leaf, the
/// nonce that opens its commitment, and its inclusion proof in the signed tree. The position
/// answer carries it (`receipt`), and `verify --receipt` reads it back.
#[derive(Debug, Clone, Deserialize, poem_openapi::Object)]
#[serde(rename_all = "camelCase")]
#[oai(rename_all = "camelCase")]
pub struct Receipt {
    pub coupon_id: i64,
    pub user_id: i64,
    pub position: u64,
    /// ISSUED or FAILED.
    pub kind: String,
    /// The gate's arrival time, µs since the Unix epoch by Redis' clock.
    pub arrived_at_us: i64,
    /// Hex SHA-256(nonce ‖ user id in decimal).
    pub commitment: String,
    /// Hex; private to this user: with it, the commitment is shown to be theirs.
    pub nonce: String,
    /// Base64 of the leaf's canonical bytes.
    pub leaf: String,
    /// The size of the tree `checkpoint` signs and `inclusionProof` is against.
    pub tree_size: u64,
    /// Base64 hashes: the RFC 6962 audit path of leaf index `position - 1`.
    pub inclusion_proof: Vec<String>,
    /// The signed checkpoint (c2sp.org/tlog-checkpoint).
    pub checkpoint: String,
}

impl Receipt {
    /// A receipt file holds the receipt itself or the whole position answer around it.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        #[derive(Deserialize)]
        struct Around {
            receipt: Receipt,
        }
        serde_json::from_str::<Around>(text)
            .map(|a| a.receipt)
            .or_else(|_| serde_json::from_str::<Receipt>(text))
            .context("not a receipt (the `receipt` of a position answer)")
    }

    /// The leaf the receipt claims, checked field by field against its bytes and opened with
    /// the nonce: returns its hash.
    fn opened_leaf(&self) -> anyhow::Result<Hash> {
        let bytes = BASE64_STANDARD.decode(&self.leaf).context("leaf")?;
        let leaf = Leaf::from_bytes(&bytes)?;
        let nonce = hex::decode(&self.nonce).context("nonce: not hex")?;
        let expected = commitment(&nonce, UserId::new(self.user_id)?);
        if leaf.coupon.get() != self.coupon_id
            || u64::from(leaf.position.get()) != self.position
            || leaf.arrived_us != self.arrived_at_us
            || leaf.kind.name() != self.kind
            || hex::encode(leaf.commitment) != self.commitment.to_ascii_lowercase()
        {
            bail!("the receipt's fields are not the leaf's");
        }
        if leaf.commitment != expected || leaf.kind == LeafKind::Lost {
            bail!(
                "the leaf does not commit to user {} with this nonce",
                self.user_id
            );
        }
        Ok(leaf.hash())
    }

    fn proof(&self) -> anyhow::Result<Vec<Hash>> {
        hashes(&self.inclusion_proof)
    }
}

fn hashes(encoded: &[String]) -> anyhow::Result<Vec<Hash>> {
    encoded
        .iter()
        .map(|h| Hash::parse_hash(h).map_err(|e| anyhow::anyhow!("{e}")))
        .collect()
}

/// The receipt on its own: its checkpoint's signature and its leaf's inclusion in that tree.
pub fn receipt_offline(receipt: &Receipt, verifier_key: &str) -> Vec<Check> {
    let coupon = CouponId::new(receipt.coupon_id);
    let opened = coupon
        .map_err(anyhow::Error::from)
        .and_then(|c| open_checkpoint(&receipt.checkpoint, verifier_key, c));
    let signed = check(
        "receipt checkpoint signature",
        opened
            .as_ref()
            .map(|c| format!("{} leaves, signed by {verifier_key}", c.size()))
            .map_err(|e| anyhow::anyhow!("{e:#}")),
    );
    let included = check(
        "receipt inclusion",
        (|| {
            let checkpoint = opened.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
            if checkpoint.size() != receipt.tree_size {
                bail!("the receipt's tree size is not its checkpoint's");
            }
            let leaf = receipt.opened_leaf()?;
            tlog_tiles::check_record(
                &receipt.proof()?,
                receipt.tree_size,
                *checkpoint.hash(),
                receipt.position - 1,
                leaf,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(format!(
                "user {} holds position {} ({}) in the tree of {}",
                receipt.user_id, receipt.position, receipt.kind, receipt.tree_size
            ))
        })(),
    );
    vec![signed, included]
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Proof {
    hashes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Leaves {
    leaves: Vec<ServedLeaf>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServedLeaf {
    position: u64,
    leaf: String,
}

#[derive(Deserialize)]
struct Event {
    stock: u64,
}

/// The public endpoints of one deployment.
struct Service {
    http: reqwest::Client,
    base: String,
    coupon: CouponId,
}

impl Service {
    async fn text(&self, path: &str) -> anyhow::Result<String> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| url.clone())?;
        let status = response.status();
        let body = response.text().await?;
        if !status.is_success() {
            bail!("GET {url}: {status}: {body}");
        }
        Ok(body)
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let body = self.text(path).await?;
        serde_json::from_str(&body).with_context(|| format!("GET {path}: unexpected body"))
    }

    fn log(&self, rest: &str) -> String {
        format!("/coupons/{}/log/{rest}", self.coupon)
    }

    async fn consistency(&self, from: &Checkpoint, to: &Checkpoint) -> anyhow::Result<()> {
        if from.size() > to.size() {
            bail!(
                "the log shrank: {} leaves then, {} now",
                from.size(),
                to.size()
            );
        }
        if from.size() == to.size() || from.size() == 0 {
            if from.size() == to.size() && from.hash() != to.hash() {
                bail!("same size, another root: the log was rewritten");
            }
            return Ok(());
        }
        let proof: Proof = self
            .json(&self.log(&format!(
                "proof/consistency?from={}&to={}",
                from.size(),
                to.size()
            )))
            .await?;
        tlog_tiles::check_tree(
            &hashes(&proof.hashes)?,
            to.size(),
            *to.hash(),
            from.size(),
            *from.hash(),
        )
        .map_err(|_| anyhow::anyhow!("no valid proof that the tree of {} leaves is a prefix of the tree of {}: the log was rewritten", from.size(), to.size()))
    }
}

/// What `verify` is asked to check.
pub struct Request {
    pub url: Option<String>,
    pub coupon: Option<CouponId>,
    pub receipt: Option<Receipt>,
    pub saved_checkpoint: Option<String>,
    pub key: Option<String>,
}

/// Every check asked for, one per line; any failure makes the whole verification fail.
pub async fn verify(request: Request) -> anyhow::Result<Vec<Check>> {
    let Some(url) = request.url else {
        let (Some(receipt), Some(key)) = (&request.receipt, &request.key) else {
            bail!("without --url, give --receipt and --key (the verifier key) to check a receipt offline");
        };
        return Ok(receipt_offline(receipt, key));
    };
    let coupon = request
        .coupon
        .or_else(|| {
            request
                .receipt
                .as_ref()
                .and_then(|r| CouponId::new(r.coupon_id).ok())
        })
        .context("--coupon is needed")?;
    let service = Service {
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?,
        base: url.trim_end_matches('/').to_owned(),
        coupon,
    };
    let mut checks = Vec::new();
    let key = match request.key {
        Some(key) => key,
        None => service.text("/fairness/key").await?.trim().to_owned(),
    };
    let note = service.text(&service.log("checkpoint")).await?;
    let latest = match open_checkpoint(&note, &key, coupon) {
        Ok(c) => {
            checks.push(check(
                "checkpoint signature",
                Ok(format!(
                    "{} leaves, root {}, key {key}, {}",
                    c.size(),
                    c.hash(),
                    match super::batch_window_us(&c) {
                        Some(0) => "one admission call per application".to_owned(),
                        Some(us) => format!("batch window {us} µs"),
                        None => "no batch window named".to_owned(),
                    }
                )),
            ));
            c
        }
        Err(e) => {
            checks.push(check("checkpoint signature", Err(e)));
            return Ok(checks);
        }
    };
    if let Some(saved) = &request.saved_checkpoint {
        let outcome = async {
            let saved = open_checkpoint(saved, &key, coupon).context("the saved checkpoint")?;
            service.consistency(&saved, &latest).await?;
            Ok(format!(
                "the log of {} leaves saved earlier is a prefix of the latest ({})",
                saved.size(),
                latest.size()
            ))
        };
        checks.push(check("consistency", outcome.await));
    }
    if let Some(receipt) = &request.receipt {
        checks.extend(receipt_offline(receipt, &key));
        let outcome = async {
            let leaf = receipt.opened_leaf()?;
            let proof: Proof = service
                .json(&service.log(&format!(
                    "proof/inclusion?position={}&size={}",
                    receipt.position,
                    latest.size()
                )))
                .await?;
            tlog_tiles::check_record(
                &hashes(&proof.hashes)?,
                latest.size(),
                *latest.hash(),
                receipt.position - 1,
                leaf,
            )
            .map_err(|_| {
                anyhow::anyhow!(
                    "the latest log does not hold this receipt's leaf at position {}",
                    receipt.position
                )
            })?;
            Ok(format!(
                "position {} is still the receipt's in the latest log",
                receipt.position
            ))
        };
        checks.push(check("receipt in the latest log", outcome.await));
    }
    checks.push(check("whole log", whole_log(&service, &latest).await));
    Ok(checks)
}

/// Every leaf: dense positions 1..n of this event, arrivals strictly increasing, n ≤ stock,
/// and the tree they make has the checkpoint's root.
async fn whole_log(service: &Service, latest: &Checkpoint) -> anyhow::Result<String> {
    const PAGE: u64 = 1_000;
    let event: Event = service
        .json(&format!("/coupons/{}", service.coupon))
        .await?;
    let mut tree = MemoryTree::default();
    let mut last_arrival = i64::MIN;
    let mut kinds = [0u64; 3];
    while tree.size() < latest.size() {
        let start = tree.size() + 1;
        let end = (start + PAGE).min(latest.size() + 1);
        let page: Leaves = service
            .json(&service.log(&format!("leaves?start={start}&end={end}")))
            .await?;
        if page.leaves.is_empty() {
            bail!("the service has no leaf at position {start}");
        }
        for served in page.leaves {
            let expected = tree.size() + 1;
            let bytes = BASE64_STANDARD.decode(&served.leaf)?;
            let leaf = Leaf::from_bytes(&bytes)?;
            if served.position != expected || u64::from(leaf.position.get()) != expected {
                bail!("position {expected} is missing or out of place");
            }
            if leaf.coupon != service.coupon {
                bail!("position {expected} belongs to coupon {}", leaf.coupon);
            }
            if leaf.arrived_us <= last_arrival {
                bail!("position {expected} arrived no later than the one before it");
            }
            last_arrival = leaf.arrived_us;
            kinds[leaf.kind as usize] += 1;
            tree.push(leaf.hash())?;
        }
    }
    if tree.root()? != *latest.hash() {
        bail!("the leaves do not make the signed root");
    }
    if latest.size() > event.stock {
        bail!("{} leaves for a stock of {}", latest.size(), event.stock);
    }
    Ok(format!(
        "positions 1..{} dense, arrivals strictly increasing, within the stock of {}; {} issued, {} lost, {} failed",
        latest.size(),
        event.stock,
        kinds[0],
        kinds[1],
        kinds[2]
    ))
}
