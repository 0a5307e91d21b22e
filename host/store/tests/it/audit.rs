//! Edits and deletions: the clear reference an envelope carries, what the relay remembers of a message after
//! delivery, and the audit log (metadata only).

use imfree_store::{AuditEvent, AuditFilter, EnvelopeKind, EnvelopeRef};

use crate::fixtures::{ack, device, envelope, user};
use crate::harness::{Fixture, both_backends};

both_backends!(an_edit_is_delivered_with_its_reference_and_audited, the_envelope_record_outlives_delivery, audit_filters_combine);

async fn an_edit_is_delivered_with_its_reference_and_audited(f: &mut Fixture) {
    let s = f.store();
    let bob = user(s, "bob").await;
    device(s, "b1", bob, 1).await;
    let original = envelope("01JE0000000000000000000001", &["b1"], 10);
    let mut edit = envelope("01JE0000000000000000000002", &["b1"], 20);
    edit.refers = Some(EnvelopeRef { action: "edit".into(), id: original.id.clone() });
    s.enqueue(&[original.clone(), edit.clone()]).await.unwrap();

    let queued = s.fetch_queue("b1", 0, 10).await.unwrap();
    assert_eq!(queued.len(), 2);
    assert_eq!(queued[0].refers, None);
    assert_eq!(queued[1].refers, edit.refers, "the reference travels with the delivery");

    let log = s.audit_log(&AuditFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(log.len(), 1, "only the edit is an audit event: {log:?}");
    assert_eq!(
        log[0].event,
        AuditEvent {
            at: 20,
            actor: "alice".into(),
            actor_device: "a1".into(),
            action: "message.edit".into(),
            conversation: "dm:alice,bob".into(),
            message_id: Some(original.id.clone()),
            subject: None,
        }
    );
    // A resend of the same edit is a duplicate: not audited twice.
    s.enqueue(&[edit]).await.unwrap();
    assert_eq!(s.audit_log(&AuditFilter { limit: 10, ..Default::default() }).await.unwrap().len(), 1);
}

async fn the_envelope_record_outlives_delivery(f: &mut Fixture) {
    let s = f.store();
    let bob = user(s, "bob").await;
    device(s, "b1", bob, 1).await;
    let original = envelope("01JE0000000000000000000003", &["b1"], 10);
    s.enqueue(std::slice::from_ref(&original)).await.unwrap();
    s.ack(&[ack("b1", &original.id)]).await.unwrap();
    let record = s.envelope_record(&original.id).await.unwrap().expect("kept after delivery for de-duplication");
    assert_eq!((record.kind, record.sender.as_str(), record.recipient.as_str(), record.created_at), (EnvelopeKind::Message, "alice", "bob", 10));
    assert_eq!(record.refers, None);
    assert_eq!(s.envelope_record("01JE0000000000000000000009").await.unwrap(), None);
    s.prune_envelopes(11).await.unwrap();
    assert_eq!(s.envelope_record(&original.id).await.unwrap(), None, "forgotten once pruned");
}

async fn audit_filters_combine(f: &mut Fixture) {
    let s = f.store();
    let event = |at, actor: &str, action: &str, conversation: &str, subject: Option<&str>| AuditEvent {
        at,
        actor: actor.into(),
        actor_device: format!("{actor}-d"),
        action: action.into(),
        conversation: conversation.into(),
        message_id: None,
        subject: subject.map(Into::into),
    };
    s.append_audit(&[
        event(100, "alice", "group.create", "group:G1", Some("alice")),
        event(200, "alice", "group.add", "group:G1", Some("bob")),
        event(300, "carol", "message.delete", "group:G2", None),
        event(400, "bob", "group.leave", "group:G1", Some("bob")),
    ])
    .await
    .unwrap();
    let actions = |filter: AuditFilter| async move {
        s.audit_log(&AuditFilter { limit: 100, ..filter }).await.unwrap().into_iter().map(|r| r.event.action).collect::<Vec<_>>()
    };
    assert_eq!(actions(AuditFilter::default()).await, ["group.leave", "message.delete", "group.add", "group.create"], "newest first");
    assert_eq!(actions(AuditFilter { conversation: Some("group:G1".into()), ..Default::default() }).await, ["group.leave", "group.add", "group.create"]);
    assert_eq!(actions(AuditFilter { user: Some("bob".into()), ..Default::default() }).await, ["group.leave", "group.add"], "as actor or subject");
    assert_eq!(actions(AuditFilter { since: Some(200), until: Some(400), ..Default::default() }).await, ["message.delete", "group.add"]);
    assert_eq!(actions(AuditFilter { user: Some("bob".into()), since: Some(300), ..Default::default() }).await, ["group.leave"]);
    assert_eq!(s.audit_log(&AuditFilter { limit: 1, ..Default::default() }).await.unwrap().len(), 1);
    assert_eq!(s.prune_audit(250).await.unwrap(), 2);
    assert_eq!(actions(AuditFilter::default()).await, ["group.leave", "message.delete"]);
}
