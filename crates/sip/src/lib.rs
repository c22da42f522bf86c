//! SIP messages for the wire path of a session border controller.
