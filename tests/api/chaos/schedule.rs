//! A schedule: everything one run does, drawn from one seed.

use std::fmt;
use std::time::Duration;

use super::generator::{self, Plan};
use super::nemesis::{self, Fault, FaultKind};
use super::rng::Rng;

pub struct Schedule {
    pub seed: u64,
    pub stock: u32,
    /// Redis runs with `appendfsync always` (a SIGKILL loses nothing) or with no persistence.
    pub aof: bool,
    /// Applicants arrive within it; every fault is healed before it ends.
    pub window: Duration,
    pub users: Vec<Plan>,
    pub faults: Vec<Fault>,
}

impl Schedule {
    pub fn from_seed(seed: u64) -> Self {
        let mut config = Rng::new(seed, 1);
        let stock = config.range(20, 80) as u32;
        let users = stock as usize * config.range(2, 4) as usize;
        let window = config.millis(8_000, 15_000);
        let aof = config.chance(50);
        let fault_count = config.range(1, 3) as usize;
        Self {
            seed,
            stock,
            aof,
            window,
            users: generator::plans(&mut Rng::new(seed, 2), users, window),
            faults: nemesis::faults(&mut Rng::new(seed, 3), fault_count, window),
        }
    }

    /// Whether a fault lost Redis' memory (the one case where README documents losses with
    /// `ACK_REPLICAS=0`).
    pub fn loses_memory(&self) -> bool {
        self.faults.iter().any(|f| match f.kind {
            FaultKind::RedisKill => !self.aof,
            FaultKind::Wipe => true,
            _ => false,
        })
    }

    pub fn kills_an_instance(&self) -> bool {
        (self.faults.iter()).any(|f| matches!(f.kind, FaultKind::InstanceKill(_)))
    }

    /// The kinds of fault it contains, once each.
    pub fn kinds(&self) -> Vec<FaultKind> {
        let mut kinds: Vec<FaultKind> = self.faults.iter().map(|f| f.kind).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let faults: Vec<String> = self.faults.iter().map(Fault::to_string).collect();
        write!(
            f,
            "seed {}: stock {}, {} users over {:.1}s, Redis {}, ACK_REPLICAS=0; faults: {}",
            self.seed,
            self.stock,
            self.users.len(),
            self.window.as_secs_f64(),
            if self.aof {
                "AOF always"
            } else {
                "no persistence"
            },
            faults.join(", ")
        )
    }
}
