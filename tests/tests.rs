//! The integration tests: one binary, one module per area.

// Test code: `pub` items are shared between modules of this one binary.
#![allow(unreachable_pub)]

// Test support: TestCa (rcgen around a test clock) and TlsServer (tokio-rustls on loopback),
// the in-process daemon, one `eventually`, probe helpers, openssl/keytool and CLI runners, and
// `metric(body, name, labels)` over a strict exposition parser.
mod util;

// The pure certificate analysis, a table of chains without sockets: every reason it gives.
mod cert_analyze;

// Probes against real in-process TLS servers: chains, names, times, keys.
mod probe_chain;

// Probes that fail before or after the certificate: connect, non-TLS, mTLS, OCSP, openssl.
mod probe_net;

// Hostile and broken endpoints, and legacy TLS servers.
mod probe_hostile;

// STARTTLS against real daemons and scripted hostile servers.
mod probe_starttls;

// `tlsward serve`: scheduled probes, HTTP endpoints, reloads, web protection.
mod serve;

// `tlsward serve` with file_sd target files: rewrites picked up by the poll, broken ones
// rejected with the targets kept.
mod file_sd;
// The scrape at fleet scale: gzip, lean metrics with their series per target, shards.
mod scrape_scale;

// Certificates and replies carrying exposition syntax, terminal escapes and huge names:
// /metrics and /probe by a strict parser and promtool, the probe and verify tables.
mod hostile_text;
// `tlsward serve` against hostile HTTP clients: slowloris, connection floods, password
// floods, /probe access control, hostile scrape-timeout headers.
mod serve_hardening;

// The agent on an endpoint host without its center: deploy with pem-files into nginx, the
// local probe and roll back, windows by the agent's clock, redeploy after a restart.
mod agent_client;

// The config file: validation messages, shipped profiles, the example.
mod config;

// The alert rules and Alertmanager example, by promtool and amtool.
mod alerts;

// A real Prometheus scraping tlsward: metrics, alerts, dashboard queries, promtool lint.
mod prometheus;

// ACME issuance against a real Pebble, with the store.
mod issue;

// `acme account show|export|import|rollover` against Pebble: one account carried between
// stores, keys made elsewhere adopted, rollover, unknown keys refused.
mod acme_account;

// The control channel: the CLI asking a running daemon (issuance through its HTTP-01
// responder), the protocol's refusals, stale sockets, working alone.
mod control;

// serve with [acme]: issuance from Pebble, renewal, drift.
mod remediation;

// SIGTERM while a deploy hook runs: the deployment is drained, not left interrupted.
mod shutdown;

// Window-gated deployments to a real nginx with the stock pem-files hook; verification,
// rollback of a broken reload.
mod deploy;

// Staged rollouts ([certificate.rollout]) to ten nginx sites from Pebble: a failing canary
// halts, `rollout resume` rolls through; batches wait for verification and the pause; the
// failure budget.
mod rollout_policy;

// Evil guests against the hook sandbox: escapes refused with typed reasons, runaways stopped.
mod hooks_sandbox;

// The command line as users run it: output formats, exit codes, targets files.
mod cli;

// The x509-limbo path-validation suite through `tlsward verify`.
mod limbo;

// Certificate formats for hooks, read by real consumers: openssl pkcs12 and Java's keytool.
mod hook_formats;

// The appliance stand-in for hook tests: its certificate API and data plane, by a plain client.
mod appliance_standin;

// The stock hooks in their sandbox, their outputs read by real consumers.
mod hooks_stock;

// Writing a hook: the README's examples, builds outside the tree, `hook check`, settings
// from files and the environment, pinned appliance certificates.
mod hooks_authoring;

// scripts/demo-acme --check: the main job's whole loop with Pebble, nginx and pem-files.
mod demo_acme;

// What an installed tool has: the systemd unit (systemd-analyze), completions, man pages,
// --version, and the Debian package installed with dpkg, run and purged.
mod packaging;

// `tlsward cert export` read back by openssl and keytool; `cert issue` on an issued certificate.
mod cert_export;

// What operators read: plain logs off a terminal, serve's start and reload lines, the probe
// table at a width with its summary, deploy list/show, rollbacks with nothing to undo.
mod cli_output;

// Backups that restore: create, verify, restore through the CLI; refused files; the age CLI;
// kill -9 during a backup; scheduled backups with the drill; alerts; disaster recovery.
mod backup;

// Renewals planned from change windows: the deploy deadline against Pebble and a test clock,
// the window gauge for an endpoint out of time, and the TlsNoWindowBeforeExpiry rule.
mod deadline;

// Agents end to end: a center, agents and their nginx each in a network namespace the test
// makes, Pebble; refusals; the namespace fixture itself.
mod agents;

// The center's agent commands: tokens printed once and stored hashed, list, revoke; the
// agent CA's keys through backup verify and restore.
mod agent_cli;

// The reconciler's side of agents in process: reports to verified, a rollback asked on a
// verify timeout, another agent refused; a key = "agent" order with the agent's CSR (Pebble).
mod agent_reconcile;

// The agent against a real `tlsward serve` and Pebble on loopback: enrollment refusals, run
// --once, SIGTERM during a hook, revocation with backoff, key = "agent", no secrets in logs.
mod agent_live;
