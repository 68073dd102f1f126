//! `[metrics]`: the metrics listener and the health paths.

use super::listen::{parse_listen_addr, Listen};
use super::raw::RawMetrics;
use super::{ConfigError, Ctx};
use crate::addr::ListenAddr;

/// The validated `[metrics]` section.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// None: no metrics listener.
    pub address: Option<ListenAddr>,
    /// Also answer /healthz and /readyz on the main listeners.
    pub main_health_paths: bool,
}

impl MetricsConfig {
    pub(super) fn from_raw(
        raw: &RawMetrics,
        listen: &[Listen],
        ctx: &Ctx,
    ) -> Result<MetricsConfig, ConfigError> {
        let address = match raw.address.as_str() {
            "" => None,
            a => Some(
                parse_listen_addr(a, None)
                    .map_err(|(msg, hint)| ctx.bad(&["metrics", "address"], msg, hint))?,
            ),
        };
        if let Some(m) = &address {
            if let Some(i) = listen.iter().position(|l| l.addr.conflicts(m)) {
                return Err(ctx.bad(
                    &["metrics", "address"],
                    format!("{m} is also listen[{i}]"),
                    "give the metrics listener its own address, or set main_health_paths = true",
                ));
            }
        }
        Ok(MetricsConfig {
            address,
            main_health_paths: raw.main_health_paths,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{invalid, valid};

    #[test]
    fn empty_address_turns_it_off() {
        assert!(valid("[metrics]\naddress = \"\"\n")
            .metrics
            .address
            .is_none());
        assert!(valid("").metrics.address.is_some(), "on by default");
    }

    #[test]
    fn metrics_cannot_share_a_listen_address() {
        let e = invalid(
            "[[listen]]\naddress = \"127.0.0.1:9898\"\n[metrics]\naddress = \"127.0.0.1:9898\"\n",
        );
        assert_eq!(e.key(), Some("metrics.address"));
        assert!(e.to_string().contains("is also listen[0]"), "{e}");
    }
}
