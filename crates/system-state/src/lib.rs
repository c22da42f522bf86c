//! The appliance's system state: online, draining, offline.

use serde::{Deserialize, Serialize};

/// Where the appliance stands in service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemState {
    /// Serving: new calls and registrations accepted.
    Online,
    /// Becoming offline: accepted calls finish, new ones are turned away (SPEC §2).
    Draining,
    /// Out of service for SIP; management keeps working.
    Offline,
}

impl SystemState {
    /// The name operators see (`online`, `draining`, `offline`).
    pub fn as_str(self) -> &'static str {
        match self {
            SystemState::Online => "online",
            SystemState::Draining => "draining",
            SystemState::Offline => "offline",
        }
    }
}

impl std::fmt::Display for SystemState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
