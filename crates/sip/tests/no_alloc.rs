//! Parsing plus reading every proxy header must not touch the heap: counted with a global
//! allocator that tallies allocations on this test binary's only thread of interest.

#[path = "support/access.rs"]
mod access;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// The allocator only counts and forwards to the system allocator.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's, forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const INVITE: &[u8] = include_bytes!("../benches/messages/invite.sip");
const OK200: &[u8] = include_bytes!("../benches/messages/ok200.sip");
const REGISTER: &[u8] = include_bytes!("../benches/messages/register.sip");
const WSINV: &[u8] = include_bytes!("rfc4475/wsinv.dat");

fn allocations_during(f: impl FnOnce() -> usize) -> (usize, usize) {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let r = f();
    let after = ALLOCATIONS.load(Ordering::SeqCst);
    (after - before, r)
}

// One test function only: the harness's own threads allocate, and a single test keeps them quiet
// while we count.
#[test]
fn parse_and_proxy_header_access_do_not_allocate() {
    // The counter works: a Vec allocates.
    let (n, _) = allocations_during(|| std::hint::black_box(vec![1u8; 8]).len());
    assert!(n >= 1, "the counting allocator does not count");
    for (name, msg) in [
        ("INVITE", INVITE),
        ("200 OK", OK200),
        ("REGISTER", REGISTER),
        ("wsinv", WSINV),
    ] {
        // Warm up anything lazily initialised outside our code.
        let expected = access::ours_touch(msg);
        assert!(expected > 0, "{name} parsed");
        let (n, r) = allocations_during(|| access::ours_touch(msg));
        assert_eq!(r, expected);
        assert_eq!(
            n, 0,
            "{name}: {n} heap allocations during parse + proxy header access"
        );
    }
    // Editing into a caller's buffer does not allocate either.
    let msg = sip::Message::parse(INVITE).unwrap();
    let mut out = [0u8; 4096];
    let (n, len) = allocations_during(|| {
        let mut ed = sip::Editor::new(&msg);
        ed.prepend_header("Via", "SIP/2.0/UDP 192.0.2.200:5060;branch=z9hG4bKsbc1");
        ed.prepend_header("Record-Route", "<sip:192.0.2.200;lr>");
        let _ = ed.decrement_max_forwards();
        ed.write_into(&mut out).unwrap()
    });
    assert!(len > INVITE.len());
    assert_eq!(n, 0, "{n} heap allocations while editing");
}
