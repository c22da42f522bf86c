//! SIP request methods. Methods are case-sensitive tokens (RFC 3261 §7.1): `invite` is an
//! unknown method, not INVITE.

use core::fmt;

/// A request method; the ones a proxy treats specially are named, any other token is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method<'a> {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// REGISTER
    Register,
    /// OPTIONS
    Options,
    /// SUBSCRIBE
    Subscribe,
    /// NOTIFY
    Notify,
    /// REFER
    Refer,
    /// MESSAGE
    Message,
    /// INFO
    Info,
    /// PRACK
    Prack,
    /// UPDATE
    Update,
    /// PUBLISH
    Publish,
    /// Any other token, as written.
    Other(&'a str),
}

impl<'a> Method<'a> {
    /// Classifies a method token (case-sensitive). The caller checks it is a token.
    pub fn from_token(s: &'a str) -> Method<'a> {
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "INFO" => Method::Info,
            "PRACK" => Method::Prack,
            "UPDATE" => Method::Update,
            "PUBLISH" => Method::Publish,
            other => Method::Other(other),
        }
    }

    /// The name of a known method as text that outlives the message (`None` for
    /// [`Method::Other`]): what a transaction keeps without copying it.
    pub fn known_str(&self) -> Option<&'static str> {
        match self {
            Method::Other(_) => None,
            Method::Invite => Some("INVITE"),
            Method::Ack => Some("ACK"),
            Method::Bye => Some("BYE"),
            Method::Cancel => Some("CANCEL"),
            Method::Register => Some("REGISTER"),
            Method::Options => Some("OPTIONS"),
            Method::Subscribe => Some("SUBSCRIBE"),
            Method::Notify => Some("NOTIFY"),
            Method::Refer => Some("REFER"),
            Method::Message => Some("MESSAGE"),
            Method::Info => Some("INFO"),
            Method::Prack => Some("PRACK"),
            Method::Update => Some("UPDATE"),
            Method::Publish => Some("PUBLISH"),
        }
    }

    /// The method as written on the wire.
    pub fn as_str(&self) -> &'a str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Info => "INFO",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Method;

    #[test]
    fn known_names_are_the_wire_names() {
        for token in [
            "INVITE",
            "ACK",
            "BYE",
            "CANCEL",
            "REGISTER",
            "OPTIONS",
            "SUBSCRIBE",
            "NOTIFY",
            "REFER",
            "MESSAGE",
            "INFO",
            "PRACK",
            "UPDATE",
            "PUBLISH",
        ] {
            assert_eq!(Method::from_token(token).known_str(), Some(token));
        }
        assert_eq!(Method::from_token("invite").known_str(), None);
    }
}
