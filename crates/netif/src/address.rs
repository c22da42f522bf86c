//! Service addresses on an interface through rtnetlink. Decides only what "idempotent" means
//! here: adding an address that is already there and removing one that is not are successes,
//! because the twin may repeat an action after a restart or a race with an operator.

use std::io;
use std::net::IpAddr;

use futures_util::TryStreamExt;
use rtnetlink::Handle;

/// Why adding, removing or looking up a service address failed.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error("cannot open a netlink route socket: {0}")]
    Open(#[source] io::Error),
    #[error("Addresses::open needs a tokio runtime to run the netlink connection on")]
    NoRuntime,
    #[error("no interface named {dev:?}: {source}")]
    NoInterface {
        dev: String,
        #[source]
        source: nix::Error,
    },
    #[error("adding {addr}/{prefix} to {dev} failed: {source}")]
    Add {
        dev: String,
        addr: IpAddr,
        prefix: u8,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("removing {addr} from {dev} failed: {source}")]
    Remove {
        dev: String,
        addr: IpAddr,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("listing the addresses of {dev} (looking for {addr}) failed: {source}")]
    List {
        dev: String,
        addr: IpAddr,
        #[source]
        source: rtnetlink::Error,
    },
}

/// A netlink route connection for managing service addresses.
///
/// The connection lives in the network namespace of the thread that calls [`Addresses::open`]
/// and its task runs on that thread's tokio runtime; it ends when the last `Addresses` (and
/// clone) is dropped.
#[derive(Clone)]
pub struct Addresses {
    handle: Handle,
}

impl std::fmt::Debug for Addresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Addresses").finish_non_exhaustive()
    }
}

impl Addresses {
    /// Opens the netlink connection and spawns its task on the current tokio runtime.
    pub fn open() -> Result<Self, AddressError> {
        // tokio::spawn would panic outside a runtime; say so instead.
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| AddressError::NoRuntime)?;
        let (connection, handle, _) = rtnetlink::new_connection().map_err(AddressError::Open)?;
        runtime.spawn(connection);
        Ok(Self { handle })
    }

    /// Puts `addr/prefix` on `dev`. An address already there (with any prefix) is success.
    ///
    /// IPv4 is the main path: the address is usable as soon as this returns (probe it first with
    /// [`crate::probe`], announce it after with [`crate::announce`]). An IPv6 address is added
    /// with the kernel's duplicate address detection left on: it stays "tentative" (present for
    /// [`Addresses::has_address`], not yet usable as a source, and dropped to "dadfailed" if
    /// another node holds it) for one to two seconds until DAD completes, and the kernel sends the
    /// unsolicited neighbour advertisements itself.
    pub async fn add_address(
        &self,
        dev: &str,
        addr: IpAddr,
        prefix: u8,
    ) -> Result<(), AddressError> {
        let index = ifindex(dev)?;
        match self
            .handle
            .address()
            .add(index, addr, prefix)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(nix::libc::EEXIST) => Ok(()),
            Err(source) => Err(AddressError::Add {
                dev: dev.to_owned(),
                addr,
                prefix,
                source,
            }),
        }
    }

    /// Takes `addr` off `dev`. An address that is not there is success.
    pub async fn remove_address(&self, dev: &str, addr: IpAddr) -> Result<(), AddressError> {
        let index = ifindex(dev)?;
        let list_err = |source| AddressError::List {
            dev: dev.to_owned(),
            addr,
            source,
        };
        let mut found = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(addr)
            .execute();
        while let Some(message) = found.try_next().await.map_err(list_err)? {
            match self.handle.address().del(message).execute().await {
                Ok(()) => {}
                // Gone between the dump and the delete: someone else removed it, which is the
                // state we wanted.
                Err(e) if errno(&e) == Some(nix::libc::EADDRNOTAVAIL) => {}
                Err(source) => {
                    return Err(AddressError::Remove {
                        dev: dev.to_owned(),
                        addr,
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// Whether `addr` is on `dev` (an IPv6 address still in DAD counts as present).
    ///
    /// A failed lookup is an error, not `false`: the twin must not conclude it holds no address
    /// because netlink hiccupped.
    pub async fn has_address(&self, dev: &str, addr: IpAddr) -> Result<bool, AddressError> {
        let index = ifindex(dev)?;
        let found = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(addr)
            .execute()
            .try_next()
            .await
            .map_err(|source| AddressError::List {
                dev: dev.to_owned(),
                addr,
                source,
            })?;
        Ok(found.is_some())
    }
}

fn ifindex(dev: &str) -> Result<u32, AddressError> {
    nix::net::if_::if_nametoindex(dev).map_err(|source| AddressError::NoInterface {
        dev: dev.to_owned(),
        source,
    })
}

/// The errno of a netlink NACK (the kernel sends it negated).
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => Some(msg.raw_code().abs()),
        _ => None,
    }
}
