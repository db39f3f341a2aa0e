//! `[certificate.rollout]`: a certificate's staged rollout policy, checked key by key, its
//! canaries against the certificate's endpoints.

use std::collections::BTreeMap;

use super::Validator;
use super::problems::suggest;
use crate::config::raw::{RawBatch, RawCanary, RawConfig};
use crate::reconcile::{BatchSize, Canary, EndpointSpec, RolloutPolicy};

impl Validator<'_, '_> {
    /// Every certificate's `[certificate.rollout]`, by certificate name; certificates
    /// without one are left out (their endpoints deploy independently).
    pub(super) fn rollouts(
        &mut self,
        raw: &RawConfig,
        endpoints: &[EndpointSpec],
    ) -> BTreeMap<String, RolloutPolicy> {
        let mut out = BTreeMap::new();
        for (i, c) in raw.certificates.iter().enumerate() {
            let Some(r) = &c.rollout else {
                continue;
            };
            let key = format!("certificate[{i}].rollout");
            let name = c.name.get_ref();
            let r = r.get_ref();
            let mut policy = RolloutPolicy::default();
            if let Some(canary) = &r.canary {
                match canary.get_ref() {
                    RawCanary::Count(n) if *n >= 0 => {
                        policy.canary = Canary::Count(usize::try_from(*n).unwrap_or(usize::MAX));
                    }
                    RawCanary::Count(_) => {
                        self.p
                            .at(canary, &format!("{key}.canary"), "must be 0 or more");
                    }
                    RawCanary::Names(names) => {
                        let mine: Vec<&String> = endpoints
                            .iter()
                            .filter(|e| e.certificate == *name)
                            .map(|e| &e.name)
                            .collect();
                        for n in names.iter().filter(|n| !mine.contains(n)) {
                            let hint = suggest(n, mine.iter().copied());
                            self.p.at(
                                canary,
                                &format!("{key}.canary"),
                                format!("{n:?} is not an endpoint of certificate {name:?}{hint}"),
                            );
                        }
                        policy.canary = Canary::Names(names.clone());
                    }
                }
            }
            if let Some(batch) = &r.batch {
                let parsed = match batch.get_ref() {
                    RawBatch::Count(n) => usize::try_from(*n)
                        .ok()
                        .filter(|n| *n > 0)
                        .map(BatchSize::Count),
                    RawBatch::Percent(text) => text
                        .strip_suffix('%')
                        .and_then(|p| p.trim().parse::<u8>().ok())
                        .filter(|p| (1..=100).contains(p))
                        .map(BatchSize::Percent),
                };
                match parsed {
                    Some(b) => policy.batch = b,
                    None => self.p.at(
                        batch,
                        &format!("{key}.batch"),
                        "must be a number of endpoints (1 or more) or a percentage from \"1%\" to \"100%\"",
                    ),
                }
            }
            if let Some(pause) = self.duration(r.pause.as_ref(), &format!("{key}.pause")) {
                policy.pause = pause;
            }
            if let Some(budget) = &r.failure_budget {
                match u32::try_from(*budget.get_ref()) {
                    Ok(b) => policy.failure_budget = b,
                    Err(_) => self.p.at(
                        budget,
                        &format!("{key}.failure_budget"),
                        "must be a number of failed endpoints, 0 or more",
                    ),
                }
            }
            out.insert(name.clone(), policy);
        }
        out
    }
}
