//! The Store conformance suite.
//!
//! Every scenario (the modules from [`accounts`] to [`settings`], one
//! concern each) is written once against `Arc<dyn Store>` and knows nothing
//! about the engine behind it. A backend joins the suite by providing an
//! `async fn open() -> Option<Opened>` that returns a fresh, empty store
//! (plus whatever must live as long as it), or `None` when the backend's
//! service is not there and the test is skipped, and by invoking
//! `for_each_scenario!(conformance_tests!(<backend>, open))`, which turns
//! every scenario into one `#[tokio::test]` (and the model-based property
//! test of [`model`] into one test) in the backend's module: [`sqlite`] and
//! [`postgres`].
//!
//! Checks that need to look inside the engine (rows in SQLite tables,
//! reopening the file, several PostgreSQL nodes on one database) live in
//! the backend's module, clearly separated from the shared scenarios.
//!
//! Time never passes on its own here: every call takes an explicit `now_ms`
//! derived from [`support::NOW`], so expiry is tested without sleeping.
//!
//! The delivery model under test: a message is one stored row; what waits
//! for a device is every event of its conversations above its position
//! (cumulative acks move it forward, never back); receipts are per-member
//! cursors (delivered, read). See `crates/store/src/lib.rs`.

use std::any::Any;
use std::sync::Arc;

use missive_store::Store;

/// A freshly opened, empty store and whatever must outlive it (a temporary
/// directory, a throw-away database, ...).
pub struct Opened {
    pub store: Arc<dyn Store>,
    pub _guard: Box<dyn Any + Send>,
}

/// Hands the list of every scenario, `module::name`, to `$callback!`
/// after `$args` and a `;`. This is the only place the list is written:
/// each backend runs it with
/// `for_each_scenario!(conformance_tests!(<backend>, open));`.
///
/// An entry may carry attributes. A plain one (`#[ignore = "..."]`) applies
/// to every backend; one wrapped in a backend's name applies to that
/// backend only, e.g. `#[postgres(ignore = "known bug ...")]` above an
/// entry. No entry carries any today.
macro_rules! for_each_scenario {
    ($callback:ident ! ($($args:tt)*)) => {
        $callback! {
            $($args)*;
            accounts::accounts,
            accounts::accounts_listed_passwords_reset_and_revocations_numbered,
            accounts::suspensions_revoke_devices_and_invites_are_single_use,
            accounts::deleted_accounts_free_their_name_and_keep_their_messages,
            devices::devices,
            devices::devices_are_replaced_and_expire_least_recent_first,
            devices::devices_are_renamed_by_their_account_only,
            devices::revoked_device_identity_is_not_reused,
            delivery::seq_and_dedup,
            delivery::fan_out,
            delivery::pending_and_ack,
            delivery::ack_is_cumulative,
            delivery::behind_names_devices_with_something_from_others,
            delivery::refused_acks_change_nothing,
            pending::own_events_are_skipped_but_scanned,
            pending::pages_continue_where_scanned_ends,
            pending::new_devices_and_members_start_now,
            retention::store_and_forward,
            retention::purge_waits_for_every_member_device,
            retention::expiry_and_sweep,
            retention::expired_events_come_as_one_range,
            retention::swept_departures_end_delivery,
            retention::dedup_survives_purged_body,
            concurrency::concurrent_appends,
            concurrency::cancelled_reads_leave_the_store_usable,
            concurrency::shutdown_refuses_further_calls,
            groups::group_create,
            groups::group_add_and_remove,
            groups::group_leave_and_roles,
            groups::event_times_never_go_backwards,
            groups::sends_are_judged_on_the_conversation_as_it_is_now,
            messaging::replies,
            messaging::reactions,
            messaging::edits,
            messaging::deletes,
            receipts::delivered_cursor_moves_on_first_ack,
            receipts::mark_read,
            receipts::receipts,
            receipts::removed_member_gets_no_receipts,
            receipts::read_receipts_name_recipients_only,
            receipts::receipt_moves_tell_the_authors_of_texts_in_the_range,
            conversations::history_paging,
            conversations::history_after_shows_events_about_earlier_messages,
            conversations::conversation_list_order,
            conversations::find_direct,
            social::contacts_and_blocks,
            social::blocks_refuse_direct_sends,
            sessions::online_devices_sharing_a_conversation,
            sessions::relay_targets,
            sessions::presence_profile,
            sessions::session_directory,
            keys::device_keys_are_claimed_once_and_go_with_their_device,
            keys::to_device_messages_wait_for_their_device_until_acked,
            settings::encrypted_conversations_take_only_ciphertext,
            settings::disappearing_messages_go_at_their_expiry,
        }
    };
}

/// Expands, in a backend's module, to one `#[tokio::test]` per scenario,
/// named as the scenario, plus the model-based property test, each against
/// a fresh store from `$open().await` (a test whose `$open` gives `None`
/// passes without running: the backend skipped it). `$backend` is the name
/// that per-backend attributes in [`for_each_scenario!`] use.
macro_rules! conformance_tests {
    ($backend:ident, $open:path; $($(#[$($attr:tt)*])* $module:ident :: $scenario:ident),* $(,)?) => {
        $(
            scenario_test!($backend, $open, $module::$scenario, []; $([$($attr)*])*);
        )*

        #[test]
        fn model_based() {
            $crate::model::check($open);
        }
    };
}

/// One scenario's test for `$backend`: takes the entry's attributes (`[...]`
/// each) one by one, keeping those for every backend and those for
/// `$backend`, dropping those for another backend; then emits the test.
/// A new backend adds its two rules next to `sqlite`'s and `postgres`'.
macro_rules! scenario_test {
    ($backend:ident, $open:path, $module:ident::$scenario:ident, [$($kept:tt)*];) => {
        #[tokio::test(flavor = "multi_thread")]
        $($kept)*
        async fn $scenario() {
            let Some(opened): Option<$crate::Opened> = $open().await else {
                return;
            };
            $crate::$module::$scenario(std::sync::Arc::clone(&opened.store)).await;
            opened.store.shutdown().await;
        }
    };
    // For this backend only: kept.
    (sqlite, $open:path, $m:ident::$s:ident, [$($kept:tt)*]; [sqlite($($attr:tt)*)] $($rest:tt)*) => {
        scenario_test!(sqlite, $open, $m::$s, [$($kept)* #[$($attr)*]]; $($rest)*);
    };
    (postgres, $open:path, $m:ident::$s:ident, [$($kept:tt)*]; [postgres($($attr:tt)*)] $($rest:tt)*) => {
        scenario_test!(postgres, $open, $m::$s, [$($kept)* #[$($attr)*]]; $($rest)*);
    };
    // For another backend: dropped.
    ($backend:ident, $open:path, $m:ident::$s:ident, [$($kept:tt)*]; [sqlite($($attr:tt)*)] $($rest:tt)*) => {
        scenario_test!($backend, $open, $m::$s, [$($kept)*]; $($rest)*);
    };
    ($backend:ident, $open:path, $m:ident::$s:ident, [$($kept:tt)*]; [postgres($($attr:tt)*)] $($rest:tt)*) => {
        scenario_test!($backend, $open, $m::$s, [$($kept)*]; $($rest)*);
    };
    // For every backend: kept.
    ($backend:ident, $open:path, $m:ident::$s:ident, [$($kept:tt)*]; [$($attr:tt)*] $($rest:tt)*) => {
        scenario_test!($backend, $open, $m::$s, [$($kept)* #[$($attr)*]]; $($rest)*);
    };
}

mod support;

mod accounts;
mod concurrency;
mod conversations;
mod delivery;
mod devices;
mod groups;
mod keys;
mod messaging;
mod model;
mod pending;
mod receipts;
mod retention;
mod sessions;
mod settings;
mod social;

mod postgres;
mod sqlite;
