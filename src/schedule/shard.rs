//! `[server] shard = "K/N"`: which of the configured targets this instance probes, so that N
//! instances with the same config split a fleet between them, each target probed by exactly
//! one.
//!
//! A target belongs to shard `K` when the first eight bytes of the SHA-256 of its identity
//! (`host:port`, a zero byte, the profile name), read big-endian, are `K - 1` modulo `N`. The
//! digest depends on nothing but those bytes: the same target lands in the same shard on every
//! run, machine and version (std's `DefaultHasher` promises none of that). Pure: no I/O.

use std::fmt;
use std::sync::Arc;

use super::TargetSpec;

/// One shard out of `count`: `index` is 1-based, as written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u64,
    count: u64,
}

// === impl Shard ===

impl Shard {
    /// The largest shard count accepted: far beyond any fleet split, small enough that a
    /// typo (`"1/40000000"`) is caught.
    pub const MAX_COUNT: u64 = 4096;

    /// Shard `index` of `count` (`1 <= index <= count <= MAX_COUNT`), or why not.
    pub fn new(index: u64, count: u64) -> Result<Self, String> {
        if count == 0 || count > Self::MAX_COUNT {
            return Err(format!(
                "the shard count {count} is outside 1..={}",
                Self::MAX_COUNT
            ));
        }
        if index == 0 || index > count {
            return Err(format!("the shard {index} is outside 1..={count}"));
        }
        Ok(Self { index, count })
    }

    /// Parses `"K/N"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let number = |v: &str| v.trim().parse::<u64>().ok();
        match s.split_once('/').map(|(k, n)| (number(k), number(n))) {
            Some((Some(k), Some(n))) => Self::new(k, n),
            _ => Err(format!(
                "{s:?} is not \"K/N\" (this instance's shard K of N, e.g. \"1/4\")"
            )),
        }
    }

    /// The shard a target with this address and profile belongs to (1-based).
    pub fn of(count: u64, name: &str, profile: &str) -> u64 {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(name.as_bytes());
        // The separator keeps ("a:1", "0b") and ("a:10", "b") apart.
        ctx.update(&[0]);
        ctx.update(profile.as_bytes());
        let digest = ctx.finish();
        let mut head = [0u8; 8];
        head.copy_from_slice(&digest.as_ref()[..8]);
        u64::from_be_bytes(head) % count.max(1) + 1
    }

    /// Whether this shard probes `target`.
    pub fn holds(&self, target: &TargetSpec) -> bool {
        Self::of(self.count, &target.name, &target.profile) == self.index
    }

    /// The targets of this shard, in their order.
    pub fn select(&self, targets: Vec<Arc<TargetSpec>>) -> Vec<Arc<TargetSpec>> {
        targets.into_iter().filter(|t| self.holds(t)).collect()
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_refuse_what_is_out_of_range() {
        assert_eq!(Shard::parse("1/4"), Ok(Shard { index: 1, count: 4 }));
        assert_eq!(Shard::parse(" 4 / 4 "), Ok(Shard { index: 4, count: 4 }));
        assert_eq!(Shard::parse("1/1").unwrap().to_string(), "1/1");
        for (bad, why) in [
            ("0/4", "the shard 0 is outside 1..=4"),
            ("5/4", "the shard 5 is outside 1..=4"),
            ("1/0", "the shard count 0 is outside 1..=4096"),
            ("1/4097", "the shard count 4097 is outside 1..=4096"),
        ] {
            assert_eq!(Shard::parse(bad), Err(why.to_owned()), "{bad}");
        }
        for bad in [
            "",
            "1",
            "1/",
            "/4",
            "a/b",
            "-1/4",
            "1/4/8",
            "1.0/4",
            "99999999999999999999/1",
        ] {
            let e = Shard::parse(bad).unwrap_err();
            assert!(
                e.ends_with("is not \"K/N\" (this instance's shard K of N, e.g. \"1/4\")"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_hash_is_fixed_and_spreads_targets_evenly() {
        // Pinned values (checked against Python's hashlib): a change here would move targets
        // between running instances.
        let pinned: Vec<u64> = (0..8)
            .map(|i| Shard::of(1 << 20, &format!("host{i}.example:443"), "default"))
            .collect();
        assert_eq!(pinned, PINNED);
        assert_ne!(
            Shard::of(1 << 20, "a:1", "0b"),
            Shard::of(1 << 20, "a:10", "b")
        );
        let mut counts = [0u32; 4];
        for i in 0..40_000 {
            counts[(Shard::of(4, &format!("10.0.{}.{}:443", i / 256, i % 256), "tls") - 1)
                as usize] += 1;
        }
        for c in counts {
            assert!((9_500..=10_500).contains(&c), "{counts:?}");
        }
    }

    const PINNED: [u64; 8] = [
        880361, 259635, 317758, 147458, 53348, 740231, 750661, 1028232,
    ];
}
