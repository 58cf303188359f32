//! Process memory settings of the store's writer.

/// Turns transparent huge pages off for this process.
///
/// sled copies a tree node on every update and frees the old one a little later, so the
/// writer allocates fresh memory all the time. With huge pages each first touch of a 2 MiB
/// region makes the kernel zero all of it: profiles of the consumer showed 10–20% of its CPU
/// in the kernel's `clear_page`, and the apply benchmark runs 15–35% faster without them.
/// Best effort: a kernel without the setting leaves things as they were.
pub fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!(error = %e, "transparent huge pages could not be turned off");
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn huge_pages_are_off_after_the_call() {
        super::disable_transparent_huge_pages();
        assert!(rustix::thread::transparent_huge_pages_are_disabled().expect("prctl"));
    }
}
