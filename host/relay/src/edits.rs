//! Edits and deletions on the relay. An envelope that changes an earlier message names it in clear (`refers`); the
//! relay lets it through only when the sender may make that change, and the store records the change in the audit
//! log in the same transaction as the envelope. The new content stays encrypted: the relay sees who changed which
//! message, never what it says.
//!
//! Clients check the same rules again on receipt (a hostile relay could let anything through), so this module is
//! about keeping honest relays' audit logs true and refusing early, not about what clients trust.

use imfree_proto::{ErrorCode, ErrorFrame, MessageRef, RefAction};
use imfree_store::{EnvelopeKind, EnvelopeRef, RelayStore, StoreError, UserId};

use crate::groups::{GroupCache, group_of_recipient};

/// Who wants to change a message, and where.
pub(crate) struct Change<'a> {
    /// The sender's account.
    pub user_id: UserId,
    /// The sender's name.
    pub user: &'a str,
    /// The conversation the changing envelope goes to (a user name, or a group's recipient name).
    pub conversation: &'a str,
    /// What it changes.
    pub refers: MessageRef,
}

/// Limits the check needs.
pub(crate) struct EditRules {
    /// How long after sending a message may be changed (ms).
    pub window_ms: i64,
    /// Entries a membership log may hold (for replaying a group's log).
    pub max_group_entries: usize,
}

fn internal(e: StoreError) -> ErrorFrame {
    tracing::error!(error = %e, "store failure while checking an edit");
    ErrorFrame::new(ErrorCode::Internal, "the relay could not check this change; send it again")
}

/// Allow `change`, or say why not. Returns the reference to store with the envelope.
pub(crate) async fn check(
    store: &dyn RelayStore,
    groups: &GroupCache,
    rules: &EditRules,
    change: &Change<'_>,
    now: i64,
) -> Result<EnvelopeRef, ErrorFrame> {
    let id = change.refers.id.to_string();
    let unknown = || {
        ErrorFrame::new(
            ErrorCode::UnknownMessage,
            format!("no message {id} in this conversation that can still be changed (messages can be changed for {} days)", rules.window_ms / 86_400_000),
        )
    };
    let Some(original) = store.envelope_record(&id).await.map_err(internal)? else { return Err(unknown()) };
    // Only messages (not receipts, not other edits) in this very conversation, inside the window.
    if original.kind != EnvelopeKind::Message || original.refers.is_some() || original.recipient != change.conversation {
        return Err(unknown());
    }
    if now - original.created_at > rules.window_ms {
        return Err(unknown());
    }
    let stored = EnvelopeRef { action: change.refers.action.as_str().to_owned(), id };
    if original.sender == change.user {
        return Ok(stored);
    }
    if change.refers.action == RefAction::Delete && may_delete_others(store, groups, rules, change).await? {
        return Ok(stored);
    }
    let what = match change.refers.action {
        RefAction::Edit => "only its author may edit a message",
        RefAction::Delete => "only its author, or a group member whose role allows deleting others' messages, may delete a message",
    };
    Err(ErrorFrame::new(ErrorCode::NotAllowed, what))
}

/// Whether the sender's role in the group (per its verified membership log) allows deleting others' messages.
async fn may_delete_others(store: &dyn RelayStore, groups: &GroupCache, rules: &EditRules, change: &Change<'_>) -> Result<bool, ErrorFrame> {
    let Some(group) = group_of_recipient(change.conversation) else { return Ok(false) };
    let Some(state) = crate::groups::current_state(store, groups, group.as_str(), rules.max_group_entries).await? else { return Ok(false) };
    let Some(identity) = store.user_identity(change.user_id).await.map_err(internal)? else { return Ok(false) };
    Ok(state.may_delete_others(&identity))
}
