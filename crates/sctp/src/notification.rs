//! The kernel's SCTP notifications (`MSG_NOTIFICATION` reads), parsed from their bytes: the
//! association's state changes and the peer's SHUTDOWN, the ones a SIP transport acts on.
//! Everything else is reported by its type number only.

use crate::sys;

/// The state an `SCTP_ASSOC_CHANGE` reports (`enum sctp_sac_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssocState {
    /// The association is up (after INIT/INIT-ACK/COOKIE).
    CommUp,
    /// The association failed: the peer sent ABORT, or retransmissions ran out.
    CommLost,
    /// The peer restarted the association.
    Restart,
    /// The graceful SHUTDOWN sequence completed.
    ShutdownComp,
    /// The association could not be set up.
    CantStartAssoc,
    Unknown(u16),
}

impl AssocState {
    fn from_raw(raw: u16) -> AssocState {
        match raw {
            0 => AssocState::CommUp,
            1 => AssocState::CommLost,
            2 => AssocState::Restart,
            3 => AssocState::ShutdownComp,
            4 => AssocState::CantStartAssoc,
            other => AssocState::Unknown(other),
        }
    }
}

/// A notification the kernel delivered on the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// `SCTP_ASSOC_CHANGE`.
    AssocChange {
        state: AssocState,
        /// `sac_error` as the kernel gives it. For COMM_LOST after the peer's ABORT, Linux
        /// copies the ABORT's first cause code without converting it from network byte order
        /// (a user-initiated abort, cause 12, reads 3072 on x86): compare with care.
        error: u16,
        outbound_streams: u16,
        inbound_streams: u16,
    },
    /// `SCTP_SHUTDOWN_EVENT`: the peer sent SHUTDOWN; it will send no more data.
    Shutdown,
    /// `SCTP_PARTIAL_DELIVERY_EVENT` with `SCTP_PARTIAL_DELIVERY_ABORTED`: the message being
    /// delivered in parts will not be completed (its parts are discarded).
    PartialDeliveryAborted,
    /// Any other notification, by its type.
    Other { kind: u16 },
}

/// A notification shorter than its type's fixed part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SCTP notification of type {kind:#06x} is {len} bytes, shorter than its {needed}")]
pub struct NotificationError {
    pub kind: u16,
    pub len: usize,
    pub needed: usize,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Notification {
    /// Parses one whole notification (`union sctp_notification`, host byte order). The common
    /// header is type (u16), flags (u16), length (u32).
    pub fn parse(bytes: &[u8]) -> Result<Notification, NotificationError> {
        let short = |kind, needed| NotificationError {
            kind,
            len: bytes.len(),
            needed,
        };
        if bytes.len() < 8 {
            return Err(short(0, 8));
        }
        let kind = u16_at(bytes, 0);
        match kind {
            // struct sctp_assoc_change: header, state, error, outbound, inbound, assoc_id.
            sys::SCTP_ASSOC_CHANGE => {
                if bytes.len() < 20 {
                    return Err(short(kind, 20));
                }
                Ok(Notification::AssocChange {
                    state: AssocState::from_raw(u16_at(bytes, 8)),
                    error: u16_at(bytes, 10),
                    outbound_streams: u16_at(bytes, 12),
                    inbound_streams: u16_at(bytes, 14),
                })
            }
            // struct sctp_shutdown_event: header, assoc_id.
            sys::SCTP_SHUTDOWN_EVENT => Ok(Notification::Shutdown),
            // struct sctp_pdapi_event: header, indication (u32), assoc_id, stream, seq.
            sys::SCTP_PARTIAL_DELIVERY_EVENT => {
                if bytes.len() < 12 {
                    return Err(short(kind, 12));
                }
                const SCTP_PARTIAL_DELIVERY_ABORTED: u32 = 0;
                if u32_at(bytes, 8) == SCTP_PARTIAL_DELIVERY_ABORTED {
                    Ok(Notification::PartialDeliveryAborted)
                } else {
                    Ok(Notification::Other { kind })
                }
            }
            _ => Ok(Notification::Other { kind }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assoc_change(state: u16, error: u16) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&sys::SCTP_ASSOC_CHANGE.to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&20u32.to_ne_bytes());
        b.extend_from_slice(&state.to_ne_bytes());
        b.extend_from_slice(&error.to_ne_bytes());
        b.extend_from_slice(&10u16.to_ne_bytes());
        b.extend_from_slice(&5u16.to_ne_bytes());
        b.extend_from_slice(&7i32.to_ne_bytes());
        b
    }

    #[test]
    fn an_assoc_change_gives_its_state_and_streams() {
        assert_eq!(
            Notification::parse(&assoc_change(3, 0)),
            Ok(Notification::AssocChange {
                state: AssocState::ShutdownComp,
                error: 0,
                outbound_streams: 10,
                inbound_streams: 5,
            })
        );
        let lost = Notification::parse(&assoc_change(1, 12));
        assert!(matches!(
            lost,
            Ok(Notification::AssocChange {
                state: AssocState::CommLost,
                error: 12,
                ..
            })
        ));
    }

    #[test]
    fn a_shutdown_event_and_an_unknown_type_parse() {
        let mut b = Vec::new();
        b.extend_from_slice(&sys::SCTP_SHUTDOWN_EVENT.to_ne_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&12u32.to_ne_bytes());
        b.extend_from_slice(&1i32.to_ne_bytes());
        assert_eq!(Notification::parse(&b), Ok(Notification::Shutdown));
        b[..2].copy_from_slice(&0x8009u16.to_ne_bytes());
        assert_eq!(
            Notification::parse(&b),
            Ok(Notification::Other { kind: 0x8009 })
        );
    }

    #[test]
    fn a_truncated_notification_is_an_error() {
        assert!(Notification::parse(&[1, 2, 3]).is_err());
        let cut = assoc_change(0, 0);
        assert_eq!(
            Notification::parse(&cut[..12]),
            Err(NotificationError {
                kind: sys::SCTP_ASSOC_CHANGE,
                len: 12,
                needed: 20
            })
        );
    }
}
