//! tlsward: probe every TLS endpoint, report what it really serves, and keep it renewed.
//!
//! # Layout
//!
//! Dependencies point down this list; nothing points back up.
//!
//! - [`cli`]: the command line: argument parsing and output rendering (table, JSON, JSON
//!   lines). Knows every module below; nothing knows it.
//! - [`daemon`]: `serve`: wires config, scheduler and HTTP server; owns reloads and shutdown.
//! - [`agent`]: agents, both sides: the center's mTLS agent API with its agent CA, tokens
//!   and signed bundles, and `tlsward agent` on an endpoint host (enroll, long-poll, deploy
//!   with the local hooks in the window, report). Its wire types (`protocol.rs`, pure data)
//!   are known to the reconciler, which answers for the desired state through
//!   [`agent::AgentBackend`]; the rest knows the reconciler, store, hooks and probe.
//! - [`control`]: the local control channel: a Unix socket beside the store, its versioned
//!   JSON-lines protocol, the server `serve` runs and the client the CLI uses to have the
//!   daemon's reconciler issue and deploy. Knows the reconciler; not the config or the CLI.
//! - [`config`]: the TOML file, validated into each module's settings with every problem at
//!   once (file, line, key); the Prometheus file_sd target files it names, and the stamp of
//!   them `serve` polls to reload on a change. Knows the settings types below; they do not
//!   know it.
//! - [`exporter`]: hyper server: `/metrics`, `/probe`, health, reload; metric families over
//!   reports (full or lean), gzip by `Accept-Encoding`. Knows nothing of the config file.
//! - [`reconcile`]: the only place tying issuer, store, hooks and probe results: the desired
//!   state (`spec.rs`); plans orders (pure `plan.rs`) and places them with their back-off
//!   (`orders.rs`), follows the CA's renewal windows (`ari.rs`), sleeps until the next
//!   deadline, reports endpoint drift; change windows (pure `window.rs`: is a window open at
//!   `now`, when does it next open); renewals early enough for every endpoint's window to
//!   open twice before the deadline (pure `deadline.rs`, its inputs in `planned.rs`); queues deployments (`rollout.rs`, the pure queue rule),
//!   stages one certificate's rollout to many endpoints: canaries, batches, pauses, halts
//!   (pure `staged.rs`, acted on in `staging.rs`)
//!   and runs them: hook, verification probes, rollback (`deploy.rs`, its typed outcome in
//!   `outcome.rs`, its settings in `settings.rs`); drains the running ones at shutdown
//!   (`drain.rs`); operators' requests, by hand or through the daemon (`manual.rs`); agent
//!   endpoints' desired state, reports, verification and rollback requests, and their CSRs
//!   (`agents.rs`, the agent API's backend); every
//!   metric family it exports, apart from the code that decides (`metrics.rs`).
//! - [`hooks`]: the wasmtime host for deploy hooks: the engine and its compiled-code cache
//!   (`engine.rs`), one run in a fresh sandbox (`run.rs`), grants (pure `grant.rs`), the host
//!   functions each checked against the grant (`host/`: files, http, commands, rollback),
//!   file writes and rollbacks through directory handles beneath the grant (`beneath.rs`),
//!   the one certificate material a run shares (`material.rs`: DER chain, key, the leaf
//!   parsed once), certificate formats (pure `convert.rs`), the component header and world
//!   checks (`world.rs`), the `http` call's certificate check by CA or pinned fingerprint
//!   (`pin.rs`). Knows nothing of the store, the reconciler or metrics.
//! - [`issuer`]: ACME via instant-acme: the account (`account.rs`), orders (`order.rs`), the
//!   CA's HTTP client that keeps its `Retry-After` (`http.rs`), accounts carried between
//!   stores and other clients: show, export, import, key rollover (`portable/`), the HTTP-01
//!   responder; records every order and version in the store, and resumes the orders a
//!   crash left pending (`resume.rs`). Reads wall time only through the [`clock::Clock`] it
//!   is given. Knows nothing of probing or metrics.
//! - [`backup`]: backups that restore: the age-encrypted file (a manifest, a `VACUUM INTO`
//!   snapshot, the store key), written atomically; create, verify, restore (re-sealing
//!   keys); the schedule `serve` runs with its restore drill, offsite command and metrics.
//!   Knows the store and files; not HTTP, ACME or the config file.
//! - [`store`]: SQLite, the only SQL: the schema and its migrations (`schema.rs`),
//!   certificates and versions (`versions.rs`), keys sealed with age (`crypt.rs`), orders and
//!   accounts (`orders.rs`; retired and pending account keys in `account_keys.rs`), the
//!   deployment queue and [`store::DeploymentState`], the one list of deployment states
//!   (`deployments.rs`), staged rollouts and [`store::RolloutState`] (`rollouts.rs`), endpoints and
//!   the append-only journal (`journal.rs`), what a backup
//!   needs: the snapshot, counts, every sealed record, the re-sealing restore (`backup.rs`).
//!   Knows nothing of ACME or HTTP.
//! - [`schedule`]: per-target probe loops under one concurrency limit; results and history
//!   in memory; which targets are this instance's shard (pure `shard.rs`). Knows nothing of
//!   HTTP.
//! - [`probe`]: connect, handshake with a recording verifier, and turn what was seen into a
//!   [`probe::ProbeReport`]; one round over a target's addresses (`round.rs`), shared by the
//!   scheduler, deploy verification and `/probe`, a panic caught as that target's failure.
//!   Owns sockets; knows nothing of HTTP, SQL or metrics.
//! - [`cert`]: pure X.509 facts and checks over DER bytes and `now`. No I/O, no clock, no logs.
//! - [`listen`]: bounded HTTP/1 serving for `exporter` and the HTTP-01 responder: the
//!   connection cap, the head, idle and stall deadlines, TLS handshakes under the head's
//!   deadline. Knows no routes, no config and no metrics.
//! - [`clock`]: the only reader of wall time.
//! - [`shutdown`]: the daemon's one shutdown signal (trigger once, wait anywhere). Knows
//!   nothing else.
//! - [`files`]: reading files a config names (regular files only, size-capped, errors
//!   without their content), PEM into rustls types (the probe's trust roots, the exporter's
//!   server TLS, `verify`'s chain), trust roots for the issuer's and hooks' HTTPS clients.
//! - [`secret`]: [`secret::Secret`], bytes never printed and zeroed on drop (keys, account
//!   credentials, TSIG secrets): the store seals them, the issuer makes them, hooks convert
//!   them, and none of them needs another for it. Knows nothing else.
//! - [`escape`]: text from outside made safe to show: control and bidi characters rendered
//!   visibly, lengths capped, and [`escape::LabelValue`], the one way into a metric label.
//!   Knows nothing else.
//! - [`version`]: the version, git commit and build date `build.rs` recorded. Knows nothing
//!   else.

pub mod agent;
pub mod backup;
pub mod cert;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod escape;
pub mod exporter;
pub mod files;
pub mod hooks;
pub mod issuer;
pub mod listen;
pub mod probe;
pub mod reconcile;
pub mod schedule;
pub mod secret;
pub mod shutdown;
pub mod store;
pub mod version;
