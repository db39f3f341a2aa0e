//! The reconciler's side of the deadline planner (`deadline.rs`): its inputs, read from
//! the store (the newest version, its ARI window) and the probe results (what each
//! endpoint serves), for the planner and the metrics alike.

use super::deadline::{
    DeployDeadline, EndpointWindow, ROLLOUT_TIME, deploy_deadline, version_deadline,
    window_before_expiry,
};
use super::{Desired, EndpointSpec, Reconciler, unix};
use crate::store::Version;

impl Reconciler {
    /// The deploy deadline of the certificate `name` whose newest version is `latest`:
    /// every endpoint bound to it, with its window, against that version's deadline. The
    /// version an endpoint is behind on already exists, so it is the newest version's
    /// deadline, not an older served one's, that the next version has to beat.
    pub(super) fn deploy_deadline(
        &self,
        desired: &Desired,
        name: &str,
        latest: &Version,
    ) -> DeployDeadline {
        let deadline = version_deadline(
            (latest.not_before, latest.not_after),
            desired.renew_fraction,
            latest.ari_window,
        );
        let endpoints: Vec<EndpointWindow<'_>> = desired
            .endpoints
            .iter()
            .filter(|e| e.certificate == name)
            .map(|e| EndpointWindow {
                name: &e.name,
                window: e.window.as_ref(),
            })
            .collect();
        // Room for the rollout's pauses between its stages, when it has a policy.
        let rollout = desired
            .rollouts
            .get(name)
            .map_or(ROLLOUT_TIME, |p| p.rollout_time(endpoints.len()));
        deploy_deadline(deadline, &endpoints, rollout)
    }

    /// For each endpoint whose served certificate's expiry is known (the soonest notAfter
    /// among its addresses, else its certificate's newest version's), whether its window
    /// opens before that expiry minus `[deploy] emergency_days`.
    pub(super) fn windows_before_expiry<'a>(
        &self,
        desired: &'a Desired,
    ) -> Vec<(&'a EndpointSpec, bool)> {
        let now = unix(self.clock.as_ref());
        desired
            .endpoints
            .iter()
            .filter_map(|e| {
                let served = self
                    .served(&e.target)
                    .and_then(|s| s.iter().filter_map(|s| s.not_after).min());
                let expiry = served.or_else(|| {
                    let latest = self.store.latest(&e.certificate).ok().flatten()?;
                    Some(latest.not_after)
                })?;
                let ok = window_before_expiry(
                    e.window.as_ref(),
                    now,
                    expiry,
                    desired.deploy.emergency_days,
                );
                Some((e, ok))
            })
            .collect()
    }
}
