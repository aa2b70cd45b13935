//! The key that signs checkpoints, in the signed-note encodings (c2sp.org/signed-note): a
//! private key file `PRIVATE+KEY+<name>+<id>+<base64>` (Go's `note.GenerateKey` format) and the
//! verifier key `<name>+<id>+<base64>` anyone checks checkpoints with.

use std::path::Path;

use anyhow::{bail, Context};
use base64::prelude::{Engine, BASE64_STANDARD};
use signed_note::{Note, StandardSigner, StandardVerifier, VerifierList};
use tlog_tiles::{Checkpoint, Hash};

use crate::domain::CouponId;

/// The signed-note algorithm byte of Ed25519 keys.
const ALG_ED25519: u8 = 1;

/// The name of the built-in development key.
pub const DEVELOPMENT_KEY_NAME: &str = "fcfs-coupon-development";

pub struct LogKey {
    signer: StandardSigner,
    name: String,
    verifier_key: String,
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogKey")
            .field("verifier_key", &self.verifier_key)
            .finish_non_exhaustive()
    }
}

impl LogKey {
    /// Reads a private key file (`fcfs-coupon fairness-key` writes one).
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("reading APP_FAIRNESS__SIGNING_KEY_FILE {}", path.display())
        })?;
        Self::from_private(text.trim()).with_context(|| {
            format!(
                "APP_FAIRNESS__SIGNING_KEY_FILE {} does not hold a signed-note Ed25519 private \
                 key (PRIVATE+KEY+<name>+<id>+<key>; `fcfs-coupon fairness-key` makes one)",
                path.display()
            )
        })
    }

    /// The built-in development key: the same in every development process, so instances
    /// agree, and public, like the development token secret. Production refuses it.
    pub fn development() -> Self {
        let seed: [u8; 32] =
            <sha2::Sha256 as sha2::Digest>::digest(b"fcfs-coupon development fairness key").into();
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        Self::from_private(&private_key(DEVELOPMENT_KEY_NAME, &key))
            .expect("the development key is well formed")
    }

    /// A new random key named `name`: (private key, verifier key).
    pub fn generate(name: &str) -> anyhow::Result<(String, String)> {
        if !signed_note::is_key_name_valid(name) {
            bail!("a key name must be non-empty, without spaces or '+'");
        }
        Ok(signed_note::generate_key(&mut rand_core::OsRng, name))
    }

    fn from_private(text: &str) -> anyhow::Result<Self> {
        let signer = StandardSigner::new(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        // Names hold no '+'; the base64 key may.
        let [_, _, name, _, encoded] = text.splitn(5, '+').collect::<Vec<_>>()[..] else {
            bail!("not PRIVATE+KEY+<name>+<id>+<key>");
        };
        let name = name.to_owned();
        let bytes = BASE64_STANDARD.decode(encoded)?;
        let seed: [u8; 32] = match bytes.split_first() {
            Some((&ALG_ED25519, seed)) => seed.try_into()?,
            _ => bail!("not an Ed25519 key"),
        };
        let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
        Ok(Self {
            verifier_key: signed_note::new_ed25519_verifier_key(&name, &public),
            signer,
            name,
        })
    }

    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    pub fn is_development(&self) -> bool {
        self.name == DEVELOPMENT_KEY_NAME
    }

    /// A signed checkpoint (c2sp.org/tlog-checkpoint) of `coupon`'s log.
    /// Its extension line names the event's batch window (see `batch_window_us`).
    pub fn sign(
        &self,
        coupon: CouponId,
        size: u64,
        root: Hash,
        batch_window_us: u32,
    ) -> anyhow::Result<String> {
        let extension = format!("{BATCH_WINDOW} {batch_window_us}\n");
        let checkpoint = Checkpoint::new(&origin(&self.name, coupon), size, root, &extension)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut note =
            Note::new(&checkpoint.to_bytes(), &[]).map_err(|e| anyhow::anyhow!("{e}"))?;
        note.add_sigs(&[&self.signer])
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(String::from_utf8(note.to_bytes())?)
    }
}

/// The checkpoint extension line naming the event's batch window in µs: applications that
/// arrived this close together may have been decided out of arrival order.
const BATCH_WINDOW: &str = "batch-window-us";

/// The batch window a checkpoint signs, if it names one.
pub fn batch_window_us(checkpoint: &Checkpoint) -> Option<u32> {
    checkpoint.extension().lines().find_map(|l| {
        l.strip_prefix(BATCH_WINDOW)?
            .strip_prefix(' ')?
            .parse()
            .ok()
    })
}

/// The log's identity in its checkpoints: the key's name, then the event.
pub fn origin(key_name: &str, coupon: CouponId) -> String {
    format!("{key_name}/coupons/{coupon}")
}

fn private_key(name: &str, key: &ed25519_dalek::SigningKey) -> String {
    let public = [&[ALG_ED25519], key.verifying_key().to_bytes().as_slice()].concat();
    let private = [&[ALG_ED25519], key.to_bytes().as_slice()].concat();
    format!(
        "PRIVATE+KEY+{name}+{:08x}+{}",
        signed_note::key_id(name, &public),
        BASE64_STANDARD.encode(private)
    )
}

/// Checks a signed checkpoint against a verifier key and the origin expected for `coupon`.
pub fn open_checkpoint(
    note: &str,
    verifier_key: &str,
    coupon: CouponId,
) -> anyhow::Result<Checkpoint> {
    let verifier = StandardVerifier::new(verifier_key)
        .map_err(|e| anyhow::anyhow!("not a verifier key: {e}"))?;
    let name = signed_note::Verifier::name(&verifier).to_owned();
    let note = Note::from_bytes(note.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
    note.verify(&VerifierList::new(vec![Box::new(verifier)]))
        .map_err(|e| anyhow::anyhow!("signature: {e}"))?;
    let checkpoint = Checkpoint::from_bytes(note.text()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let expected = origin(&name, coupon);
    if checkpoint.origin() != expected {
        bail!(
            "the checkpoint is for {}, not {expected}",
            checkpoint.origin()
        );
    }
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_opens_with_its_key_only_and_only_for_its_event() {
        let key = LogKey::development();
        let (_, other) = LogKey::generate("someone-else").unwrap();
        let coupon = CouponId::new(5).unwrap();
        let note = key
            .sign(coupon, 3, tlog_tiles::record_hash(b"x"), 200)
            .unwrap();
        let opened = open_checkpoint(&note, key.verifier_key(), coupon).unwrap();
        assert_eq!(opened.size(), 3);
        assert_eq!(batch_window_us(&opened), Some(200));
        assert!(open_checkpoint(&note, &other, coupon).is_err());
        assert!(open_checkpoint(&note, key.verifier_key(), CouponId::new(6).unwrap()).is_err());
        let forged = note.replacen("\n3\n", "\n4\n", 1);
        assert!(open_checkpoint(&forged, key.verifier_key(), coupon).is_err());
    }

    #[test]
    fn a_generated_private_key_reads_back_with_its_verifier_key() {
        let (private, verifier) = LogKey::generate("shop.example").unwrap();
        let key = LogKey::from_private(&private).unwrap();
        assert_eq!(key.verifier_key(), verifier);
    }
}
