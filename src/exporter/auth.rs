//! Who may ask: basic auth against bcrypt hashes and bearer tokens by SHA-256, checked so that
//! password guessing can neither stall the async workers (and with them every probe) nor
//! tell which user names exist.
//!
//! bcrypt runs on the blocking pool, at most [`VERIFY_PARALLEL`] at once; at most
//! [`VERIFY_WAITING`] more wait for a turn, and any attempt beyond that is answered at once
//! with "busy" (429) instead of queueing without bound. An unknown user costs the same bcrypt
//! work as a wrong password: it is verified against a dummy hash of the configured cost.
//! Credentials that verified are remembered (bounded, and keyed by the hash too, so a reload
//! that changes a hash forgets them); failures are not, so guesses cannot push them out.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine;
use tokio::sync::Semaphore;

use super::WebConfig;

/// bcrypt verifications running at once.
pub(super) const VERIFY_PARALLEL: usize = 2;
/// Attempts that may wait for a verification slot; more are refused as busy.
pub(super) const VERIFY_WAITING: usize = 8;
/// Verified credentials remembered; the memory is cleared when full.
const CACHE_MAX: usize = 64;
/// The cost of the dummy hash when no user is configured with a readable cost.
const DEFAULT_COST: u32 = 12;

/// The outcome of checking a request's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// No authentication configured, or valid credentials.
    Allowed,
    /// Missing, malformed or wrong credentials.
    Denied,
    /// Too many password checks in progress; try again shortly.
    Busy,
}

/// What an `Authorization` header carries.
#[derive(Debug, PartialEq, Eq)]
enum Credentials {
    Bearer(String),
    Basic { user: String, password: String },
    Unusable,
}

/// Parses an `Authorization` value. Scheme names are case-insensitive (RFC 9110 §11.1).
fn parse(value: &str) -> Credentials {
    let value = value.trim_start();
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Credentials::Bearer(rest.to_owned());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Credentials::Unusable;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
        return Credentials::Unusable;
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return Credentials::Unusable;
    };
    match text.split_once(':') {
        Some((user, password)) => Credentials::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        },
        None => Credentials::Unusable,
    }
}

/// The bcrypt cost written in a hash (`$2b$12$...`).
fn cost(hash: &str) -> Option<u32> {
    hash.get(4..6)?
        .parse()
        .ok()
        .filter(|c| (4..=31).contains(c))
}

/// A well-formed bcrypt hash that no password matches, at the highest cost among `users`, so
/// verifying against it takes as long as verifying against theirs.
fn dummy_hash<'a>(users: impl Iterator<Item = &'a String>) -> String {
    let cost = users.filter_map(|h| cost(h)).max().unwrap_or(DEFAULT_COST);
    // 22 characters of salt and 31 of digest in bcrypt's base64; '.' is its zero.
    format!("$2b${cost:02}${}", ".".repeat(53))
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Checks credentials; shared by every connection of one server.
#[derive(Debug)]
pub(super) struct Authenticator {
    running: Arc<Semaphore>,
    admitted: Semaphore,
    /// Digests of (hash, user, password) that verified.
    verified: Mutex<HashSet<[u8; 32]>>,
    verifications: AtomicU64,
}

impl Default for Authenticator {
    fn default() -> Self {
        Self {
            running: Arc::new(Semaphore::new(VERIFY_PARALLEL)),
            admitted: Semaphore::new(VERIFY_PARALLEL + VERIFY_WAITING),
            verified: Mutex::new(HashSet::new()),
            verifications: AtomicU64::new(0),
        }
    }
}

impl Authenticator {
    /// How many bcrypt verifications were started.
    #[cfg(test)]
    pub(super) fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Checks the `Authorization` header value (if any) against `web`.
    pub(super) async fn check(&self, web: &WebConfig, header: Option<&str>) -> Verdict {
        if !web.requires_auth() {
            return Verdict::Allowed;
        }
        let Some(header) = header else {
            return Verdict::Denied;
        };
        let (user, password) = match parse(header) {
            Credentials::Bearer(token) => {
                // Comparing digests, not tokens: timing reveals nothing about a token's bytes.
                let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
                let allowed = web
                    .bearer_token_sha256
                    .iter()
                    .any(|d| d.as_slice() == digest.as_ref());
                return if allowed {
                    Verdict::Allowed
                } else {
                    Verdict::Denied
                };
            }
            Credentials::Basic { user, password } => (user, password),
            Credentials::Unusable => return Verdict::Denied,
        };
        if web.basic_auth_users.is_empty() {
            return Verdict::Denied;
        }
        let (hash, known) = match web.basic_auth_users.get(&user) {
            Some(hash) => (hash.clone(), true),
            None => (dummy_hash(web.basic_auth_users.values()), false),
        };
        let key = sha256(&[hash.as_bytes(), user.as_bytes(), password.as_bytes()]);
        if self.remembered(&key) {
            return Verdict::Allowed;
        }
        let Ok(_admitted) = self.admitted.try_acquire() else {
            return Verdict::Busy;
        };
        let Ok(turn) = self.running.clone().acquire_owned().await else {
            return Verdict::Busy;
        };
        self.verifications.fetch_add(1, Ordering::Relaxed);
        // The permit moves into the blocking task: a client that hangs up does not free the
        // slot while its bcrypt still runs.
        let ok = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            bcrypt::verify(password, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if ok && known {
            let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            if verified.len() >= CACHE_MAX {
                verified.clear();
            }
            verified.insert(key);
            Verdict::Allowed
        } else {
            Verdict::Denied
        }
    }

    fn remembered(&self, key: &[u8; 32]) -> bool {
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(key)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    fn web(users: &[(&str, &str)]) -> WebConfig {
        let mut web = WebConfig::open();
        web.basic_auth_users = users
            .iter()
            .map(|(u, h)| ((*u).to_owned(), (*h).to_owned()))
            .collect::<BTreeMap<_, _>>();
        web
    }

    #[test]
    fn schemes_are_case_insensitive() {
        let creds = Credentials::Basic {
            user: "prom".into(),
            password: "pw:with:colons".into(),
        };
        let encoded = basic("prom", "pw:with:colons");
        let rest = encoded.strip_prefix("Basic ").unwrap();
        for scheme in ["Basic", "basic", "BASIC", "bAsIc"] {
            assert_eq!(parse(&format!("{scheme} {rest}")), creds, "{scheme}");
        }
        assert_eq!(parse(&format!("basic   {rest}  ")), creds);
        for scheme in ["Bearer", "bearer", "BEARER"] {
            assert_eq!(
                parse(&format!("{scheme} t0ken")),
                Credentials::Bearer("t0ken".into())
            );
        }
        for bad in [
            "Basic",
            "Basicx abc",
            "Digest abc",
            "Basic !!!",
            "",
            "Basic bm9jb2xvbg==",
        ] {
            assert_eq!(parse(bad), Credentials::Unusable, "{bad:?}");
        }
    }

    #[test]
    fn the_dummy_hash_has_the_highest_configured_cost_and_matches_nothing() {
        let h4 = bcrypt::hash("a", 4).unwrap();
        let h5 = bcrypt::hash("b", 5).unwrap();
        let dummy = dummy_hash([h4.clone(), h5.clone()].iter());
        assert_eq!(cost(&dummy), Some(5));
        assert_eq!(dummy.len(), 60);
        assert!(!bcrypt::verify("", &dummy).expect("a well-formed hash"));
        assert!(!bcrypt::verify("b", &dummy).expect("a well-formed hash"));
        assert_eq!(cost(&dummy_hash([].iter())), Some(DEFAULT_COST));
    }

    #[tokio::test]
    async fn unknown_users_and_wrong_passwords_both_cost_a_bcrypt_verification() {
        let auth = Authenticator::default();
        let web = web(&[("prom", &bcrypt::hash("s3cret", 4).unwrap())]);
        let check = |h: String| {
            let (auth, web) = (&auth, &web);
            async move { auth.check(web, Some(&h)).await }
        };
        assert_eq!(check(basic("prom", "wrong")).await, Verdict::Denied);
        assert_eq!(auth.verifications(), 1);
        assert_eq!(check(basic("nobody", "wrong")).await, Verdict::Denied);
        assert_eq!(auth.verifications(), 2, "an unknown user is verified too");
        // Failures are not remembered: each guess costs its verification again.
        assert_eq!(check(basic("nobody", "wrong")).await, Verdict::Denied);
        assert_eq!(auth.verifications(), 3);
        // A success is remembered, so a scrape costs bcrypt once, not per request.
        assert_eq!(check(basic("prom", "s3cret")).await, Verdict::Allowed);
        assert_eq!(check(basic("prom", "s3cret")).await, Verdict::Allowed);
        assert_eq!(auth.verifications(), 4);
        // Without credentials, or malformed ones, nothing is verified.
        assert_eq!(auth.check(&web, None).await, Verdict::Denied);
        assert_eq!(check("Basic %%%".into()).await, Verdict::Denied);
        assert_eq!(auth.verifications(), 4);

        // A reload that changes the hash forgets the remembered success.
        let changed = self::web(&[("prom", &bcrypt::hash("new", 4).unwrap())]);
        assert_eq!(
            auth.check(&changed, Some(&basic("prom", "s3cret"))).await,
            Verdict::Denied
        );
        assert_eq!(auth.verifications(), 5);
    }

    #[tokio::test]
    async fn attempts_beyond_the_waiting_room_are_refused_at_once() {
        let auth = Authenticator::default();
        let web = web(&[("prom", &bcrypt::hash("s3cret", 4).unwrap())]);
        // Hold every admission permit, as that many attempts in progress would.
        let _held = auth
            .admitted
            .try_acquire_many((VERIFY_PARALLEL + VERIFY_WAITING) as u32)
            .unwrap();
        assert_eq!(
            auth.check(&web, Some(&basic("prom", "wrong"))).await,
            Verdict::Busy
        );
        assert_eq!(auth.verifications(), 0);
        // Bearer tokens never wait for bcrypt.
        let mut with_token = web.clone();
        with_token.bearer_token_sha256 = vec![sha256_plain(b"t0ken")];
        assert_eq!(
            auth.check(&with_token, Some("bearer t0ken")).await,
            Verdict::Allowed
        );
    }

    fn sha256_plain(data: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
        out
    }
}
