//! The bundled `calendar` plugin (bot scope): it runs as the `calendar` bot account, a member of the conversations
//! it is added to, and keeps their meetings in one CalDAV calendar collection (the administrator's `calendar-url`).
//!
//! - `/meet <when> <title> [with @users]` creates a VEVENT (PUT with `If-None-Match: *`) and posts an invitation
//!   card; 👍/✅ and 👎/❌ reactions on the card set the reacting member's PARTSTAT on the server (GET with its
//!   ETag, PUT with `If-Match`, again on 412), taking a reaction back sets NEEDS-ACTION again.
//! - A reminder is posted `reminder-minutes` before each start: reminders in kv, one timer for the earliest,
//!   armed again by `init`.
//! - `/agenda [today|week]` runs a calendar-query REPORT and lists the events in the user's time zone
//!   (`/meet tz <Zone>` sets it; the `timezone` setting is the default).
//! - An `.ics` file posted in the conversation is shown as event cards with an "Add to calendar" button.
//!
//! The pure logic (iCalendar, time phrases, events, CalDAV text) builds natively and carries its unit tests;
//! [`plugin`] is the glue to the host, built for wasm32 only.

#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod caldav;
pub mod event;
pub mod ical;
pub mod reminders;
pub mod when;

#[cfg(target_arch = "wasm32")]
pub mod plugin;
