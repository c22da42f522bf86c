//! The appliance's system state: online, draining, offline.

/// Where the appliance stands in service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SystemState {
    /// Serving: new calls and registrations accepted.
    Online,
    /// Becoming offline: accepted calls finish, new ones are turned away (SPEC §2).
    Draining,
    /// Out of service for SIP; management keeps working.
    Offline,
}
