//! DNS-01 (RFC 8555 §8.4) through RFC 2136 dynamic updates signed with TSIG (RFC 8945), which
//! BIND, Knot and PowerDNS accept. The messages are built and signed by hickory-proto; this
//! file only sends them over TCP and checks the answer.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode, update_message};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{Name, RData, Record, RecordSet, RecordType, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::IssueError;
use crate::clock::Clock;
use crate::secret::Secret;

/// How long TXT records live: short, they are gone after validation.
const TXT_TTL: u32 = 60;
/// Time allowed for one update exchange.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(10);

/// An authoritative server that accepts signed updates for a zone.
#[derive(Debug, Clone)]
pub struct Rfc2136Settings {
    /// The primary server (`IP:PORT`).
    pub server: SocketAddr,
    /// The zone the challenge names live in (e.g. `example.org.`).
    pub zone: String,
    /// The TSIG key's name, as configured on the server.
    pub key_name: String,
    /// The TSIG secret (raw bytes).
    pub secret: Secret,
}

fn name(s: &str) -> Result<Name, IssueError> {
    let mut n =
        Name::from_ascii(s).map_err(|e| IssueError::Client(format!("DNS name {s:?}: {e}")))?;
    n.set_fqdn(true);
    Ok(n)
}

impl Rfc2136Settings {
    fn txt_set(&self, fqdn: &str, value: &str) -> Result<RecordSet, IssueError> {
        let owner = name(fqdn)?;
        let mut set = RecordSet::new(owner.clone(), RecordType::TXT, 0);
        set.insert(
            Record::from_rdata(owner, TXT_TTL, RData::TXT(TXT::new(vec![value.to_owned()]))),
            0,
        );
        Ok(set)
    }

    /// Adds `value` to the TXT records of `fqdn`, signed at `clock`'s time.
    pub async fn add_txt(
        &self,
        fqdn: &str,
        value: &str,
        clock: &dyn Clock,
    ) -> Result<(), IssueError> {
        let msg =
            update_message::append(self.txt_set(fqdn, value)?, name(&self.zone)?, false, false);
        self.send(msg, clock).await
    }

    /// Removes exactly that TXT record again.
    pub async fn remove_txt(
        &self,
        fqdn: &str,
        value: &str,
        clock: &dyn Clock,
    ) -> Result<(), IssueError> {
        let msg =
            update_message::delete_by_rdata(self.txt_set(fqdn, value)?, name(&self.zone)?, false);
        self.send(msg, clock).await
    }

    async fn send(&self, mut msg: Message, clock: &dyn Clock) -> Result<(), IssueError> {
        let dns = |e: String| IssueError::Dns(format!("{}: {e}", self.server));
        let signer = TSigner::new(
            self.secret.expose().to_vec(),
            TsigAlgorithm::HmacSha256,
            name(&self.key_name)?,
            300,
        )
        .map_err(|e| dns(e.to_string()))?;
        // TSIG's "time signed" (RFC 8945 §4.2).
        let now = crate::clock::unix_seconds(clock) as u64;
        msg.metadata.id = fastrand::u16(..);
        msg.finalize(&signer, now).map_err(|e| dns(e.to_string()))?;
        let bytes = msg.to_vec().map_err(|e| dns(e.to_string()))?;
        let exchange = async {
            let mut tcp = TcpStream::connect(self.server).await?;
            tcp.write_all(&(bytes.len() as u16).to_be_bytes()).await?;
            tcp.write_all(&bytes).await?;
            let mut len = [0u8; 2];
            tcp.read_exact(&mut len).await?;
            let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
            tcp.read_exact(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let answer = tokio::time::timeout(UPDATE_TIMEOUT, exchange)
            .await
            .map_err(|_| dns("no answer to the update".into()))?
            .map_err(|e| dns(e.to_string()))?;
        let answer = Message::from_vec(&answer).map_err(|e| dns(e.to_string()))?;
        match answer.metadata.response_code {
            ResponseCode::NoError => Ok(()),
            code => Err(dns(format!("the server refused the update: {code}"))),
        }
    }
}

/// Where DNS-01 records go.
#[derive(Debug, Clone)]
pub enum Dns01 {
    /// RFC 2136 updates to an authoritative server.
    Rfc2136(Rfc2136Settings),
    /// A command, for providers with HTTP APIs: run as `ARGV... add|remove NAME VALUE` with
    /// a cleared environment (PATH only), a time limit, and its output kept for errors.
    Command(Vec<String>),
}

/// How long a DNS hook command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

impl Dns01 {
    /// Publishes `value` as a TXT record of `fqdn` (an RFC 2136 update is signed at
    /// `clock`'s time).
    pub async fn add_txt(
        &self,
        fqdn: &str,
        value: &str,
        clock: &dyn Clock,
    ) -> Result<(), IssueError> {
        match self {
            Self::Rfc2136(s) => s.add_txt(fqdn, value, clock).await,
            Self::Command(argv) => run_command(argv, "add", fqdn, value).await,
        }
    }

    /// Removes it again.
    pub async fn remove_txt(
        &self,
        fqdn: &str,
        value: &str,
        clock: &dyn Clock,
    ) -> Result<(), IssueError> {
        match self {
            Self::Rfc2136(s) => s.remove_txt(fqdn, value, clock).await,
            Self::Command(argv) => run_command(argv, "remove", fqdn, value).await,
        }
    }
}

async fn run_command(
    argv: &[String],
    action: &str,
    fqdn: &str,
    value: &str,
) -> Result<(), IssueError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| IssueError::Dns("empty DNS hook command".into()))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .args([action, fqdn, value])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(COMMAND_TIMEOUT, cmd.output())
        .await
        .map_err(|_| {
            IssueError::Dns(format!(
                "{program} {action} {fqdn}: timed out after {COMMAND_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| IssueError::Dns(format!("{program}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    stderr.truncate(500);
    Err(IssueError::Dns(format!(
        "{program} {action} {fqdn} failed ({}): {}",
        out.status,
        stderr.trim()
    )))
}
