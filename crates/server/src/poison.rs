//! Locking a std `Mutex` that a panicking holder may have poisoned. A leaf
//! module: the services and the gateway use it without reaching up to the
//! crate root.

/// Locks `mutex` even if a panicking thread poisoned it: every critical
/// section in this crate leaves its value consistent, so the value is
/// still safe to use, and one panic must not take the node down.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
