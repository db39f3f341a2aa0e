//! Managed certificates and their issued versions, with the ARI renewal window of each.

use rusqlite::{OptionalExtension, params};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::journal::journal_in;
use super::{CertificateRow, Secret, Store, StoreError, Version};

impl Version {
    /// The leaf and its chain, DER, from the stored PEM: the one place a version's chain is
    /// read back (deployment, export and the ARI identifier all start here, and go on from
    /// the DER). A chain that does not parse, or is empty, is a corrupt record.
    pub fn chain_der(&self) -> Result<Vec<CertificateDer<'static>>, StoreError> {
        let chain = CertificateDer::pem_slice_iter(self.chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                StoreError::Corrupt(format!("version {}: the stored chain: {e}", self.id))
            })?;
        if chain.is_empty() {
            return Err(StoreError::Corrupt(format!(
                "version {}: the stored chain is empty",
                self.id
            )));
        }
        Ok(chain)
    }
}

impl Store {
    /// Records or updates a managed certificate's definition.
    pub fn upsert_certificate(&self, c: &CertificateRow, now: i64) -> Result<(), StoreError> {
        let domains = serde_json::to_string(&c.domains).expect("strings serialize");
        self.conn().execute(
            "INSERT INTO certificates (name, domains, key_type, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO UPDATE SET domains = excluded.domains, key_type = excluded.key_type",
            params![c.name, domains, c.key_type, now],
        )?;
        Ok(())
    }

    /// Every managed certificate, by name.
    pub fn certificates(&self) -> Result<Vec<CertificateRow>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, domains, key_type FROM certificates ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        rows.map(|row| {
            let (name, domains, key_type) = row?;
            let domains = serde_json::from_str(&domains)
                .map_err(|e| StoreError::Corrupt(format!("domains of {name}: {e}")))?;
            Ok(CertificateRow {
                name,
                domains,
                key_type,
            })
        })
        .collect()
    }

    /// Every version of a certificate, newest first.
    pub fn versions(&self, certificate: &str) -> Result<Vec<Version>, StoreError> {
        self.versions_limited(certificate, -1)
    }

    /// The newest `limit` versions of `certificate` (every one for -1), newest first.
    fn versions_limited(&self, certificate: &str, limit: i64) -> Result<Vec<Version>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, certificate, serial, sha256, not_before, not_after, chain_pem, ari_id, issued_at, ari_start, ari_end, renew_at
             FROM versions WHERE certificate = ?1 ORDER BY not_before DESC, id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![certificate, limit], |r| {
            Ok(Version {
                id: r.get(0)?,
                certificate: r.get(1)?,
                serial: r.get(2)?,
                sha256: r.get(3)?,
                not_before: r.get(4)?,
                not_after: r.get(5)?,
                chain_pem: r.get(6)?,
                ari_id: r.get(7)?,
                issued_at: r.get(8)?,
                ari_window: match (r.get::<_, Option<i64>>(9)?, r.get::<_, Option<i64>>(10)?) {
                    (Some(a), Some(b)) => Some((a, b)),
                    _ => None,
                },
                renew_at: r.get(11)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records the CA's renewal window for a version and the time chosen inside it, and
    /// journals it when it changed.
    pub fn set_renewal_window(
        &self,
        version: &Version,
        window: (i64, i64),
        renew_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        if version.ari_window == Some(window) && version.renew_at == Some(renew_at) {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE versions SET ari_start = ?2, ari_end = ?3, renew_at = ?4 WHERE id = ?1",
            params![version.id, window.0, window.1, renew_at],
        )?;
        journal_in(
            &tx,
            now,
            "ari.window",
            Some(&version.certificate),
            &serde_json::json!({ "version": version.id, "start": window.0, "end": window.1, "renew_at": renew_at }),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The newest version of a certificate.
    pub fn latest(&self, certificate: &str) -> Result<Option<Version>, StoreError> {
        // One row, not every version: agents' looks at their state ask this per endpoint.
        Ok(self.versions_limited(certificate, 1)?.into_iter().next())
    }

    /// The version with this fingerprint, if tlsward issued it.
    pub fn version_by_sha256(&self, sha256: &str) -> Result<Option<Version>, StoreError> {
        self.version_where("sha256", sha256)
    }

    /// A version by its row id.
    pub fn version_by_id(&self, id: i64) -> Result<Option<Version>, StoreError> {
        self.version_where("id", id)
    }

    /// The version whose unique `column` (a constant: `id` or `sha256`) equals `value`.
    fn version_where(
        &self,
        column: &str,
        value: impl rusqlite::ToSql,
    ) -> Result<Option<Version>, StoreError> {
        let conn = self.conn();
        let found: Option<(String, i64)> = conn
            .query_row(
                &format!("SELECT certificate, id FROM versions WHERE {column} = ?1"),
                params![value],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        drop(conn);
        match found {
            Some((c, id)) => Ok(self.versions(&c)?.into_iter().find(|v| v.id == id)),
            None => Ok(None),
        }
    }

    /// The private key of a version, decrypted.
    /// A version whose key an agent holds (`key = "agent"`) has none here: an error.
    pub fn version_key(&self, id: i64) -> Result<Secret, StoreError> {
        let (sealed, holder): (Vec<u8>, Option<String>) = self.conn().query_row(
            "SELECT key_sealed, key_holder FROM versions WHERE id = ?1",
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if let Some(agent) = holder {
            return Err(StoreError::KeyHeldByAgent(agent));
        }
        self.crypt.decrypt(&sealed)
    }
}
