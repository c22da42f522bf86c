//! The only unsafe code of the crate: the few socket calls that `socket2` does not offer for
//! SCTP (a `setsockopt` with an SCTP structure, a `recvmsg` that returns the raw `msg_flags`,
//! which carry `MSG_EOR` and `MSG_NOTIFICATION`), and the kernel's structures and numbers that
//! `libc` does not export.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `SCTP_EVENT` (RFC 6458 §6.2.2, Linux 5.0+): switch one notification on or off.
pub const SCTP_EVENT: libc::c_int = 127;

/// Notification types (`enum sctp_sn_type` of `linux/sctp.h`).
pub const SCTP_ASSOC_CHANGE: u16 = 0x8001;
pub const SCTP_SHUTDOWN_EVENT: u16 = 0x8005;
pub const SCTP_PARTIAL_DELIVERY_EVENT: u16 = 0x8006;

/// `struct sctp_event` of `linux/sctp.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SctpEvent {
    pub se_assoc_id: i32,
    pub se_type: u16,
    pub se_on: u8,
}

/// `setsockopt(fd, level, name, &value, sizeof value)` for a plain-data `value`.
pub fn setsockopt<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    let len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is a live reference to `len` readable bytes of a `Copy` (plain data) type;
    // the kernel only reads them during the call. `fd` is a borrowed, open descriptor.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast::<libc::c_void>(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One `recvmsg` into `buf`: the number of bytes read and the returned `msg_flags`.
pub fn recvmsg(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, libc::c_int)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast::<libc::c_void>(),
        iov_len: buf.len(),
    };
    // SAFETY: `msghdr` is plain data for which all-zeroes is a valid value (no name, no control
    // buffer, no iovecs); the fields we need are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: `msg` points at one iovec describing `buf`, which is writable for `buf.len()`
    // bytes and outlives the call; no name or control buffer is given. `fd` is open.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((n as usize, msg.msg_flags))
}
