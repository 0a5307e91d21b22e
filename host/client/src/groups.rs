//! Groups on this device, driven through the client core ([`imfree_client_core::groups`]), which owns what must
//! behave the same in every client: verifying the membership log (signatures, roles, forks and rollbacks), sender
//! keys, group messages. This module supplies the rest: the relay requests ([`GroupRelay`] on [`Session`]), the
//! group inbox, the conversation rows for membership changes and refusals, and the outbox for membership updates.
//!
//! Group work that arrives is put in the local inbox before it is acknowledged and handled after the batch
//! ([`Session::settle_groups`]), because it may need the log from the relay.

use imfree_client_core::groups::{EntryData, Group, GroupEvent, GroupOpened, GroupRelay, Groups};
use imfree_crypto::identity::DeviceCertificate;
use imfree_crypto::membership::{InfoKind, InviteKey, Member, MembershipOp, Permissions, Role, info_commitment};
use imfree_proto::content::Content;
use imfree_proto::{
    DevicePayload, Frame, FrameBody, GroupAppend, GroupEntries, GroupId, GroupLog, InviteProof, Limits, Payload, Recipient, Send, mime,
};
use rand_core::OsRng;

pub use imfree_client_core::groups::{
    GROUP_PREFIX, GroupInfo, GroupTexts, GroupUpdate, INVITE_PREFIX, SENDER_KEY_MIME, SaltedText, UPDATE_MIME, is_control, parse_group,
    parse_invite_link,
};

use crate::engine::{Event, Session, new_envelope_id};
use crate::store::{InboxItem, LocalStore, OutboxItem, StoredMessage};
use crate::{ClientError, now_ms};

/// The members of a group and their roles as this device last verified them (no network: the log is read as it
/// was synced), or `None` if this device does not know the group, was refused it or left it.
pub async fn verified_roles(store: &LocalStore, group: &GroupId) -> Result<Option<Vec<(String, Role)>>, ClientError> {
    imfree_client_core::groups::verified_roles(store, group).await
}

/// Whether `user`'s role in the group, per the verified membership log in `store`, allows deleting other members'
/// messages.
pub(crate) async fn may_delete_others(store: &LocalStore, group: &GroupId, user: &str) -> Result<bool, ClientError> {
    imfree_client_core::groups::may_delete_others(store, group, user).await
}

fn group_bytes(id: &GroupId) -> [u8; 16] {
    imfree_client_core::groups::group_bytes(id)
}

fn now() -> u64 {
    u64::try_from(now_ms()).unwrap_or(0)
}

impl<'c> Session<'c> {
    /// The client core's groups as this device, with the join in progress.
    fn group_core(&self) -> Groups<'c, LocalStore> {
        let client = self.client;
        let mut core = Groups::new(client.user(), client.device(), client.e2e_slot(), client.store());
        core.invite = self.invite;
        core
    }

    /// Record what the core noted, in order: membership changes and refusals, as rows of the group's conversation.
    async fn record(&mut self, core: &mut Groups<'_, LocalStore>) -> Result<(), ClientError> {
        for event in core.take_events() {
            match event {
                GroupEvent::Change { group, id, actor, text } => self.system_message(&group, &id, &actor, &text, "event").await?,
                GroupEvent::Refused { group, reason } => {
                    let id = format!("{group}-refused-{}", now_ms());
                    self.system_message(&group, &id, "imfree", &GroupEvent::refusal_text(&reason), "warning").await?
                }
            }
        }
        Ok(())
    }

    /// Create a group with this user as its only member and admin. Returns its id.
    pub async fn create_group(&mut self, name: &str) -> Result<GroupId, ClientError> {
        let mut core = self.group_core();
        let result = core.create(self, name, now()).await;
        self.record(&mut core).await?;
        result
    }

    /// Add `user` to a group (this user must be an admin). The new member can read what is sent from now on.
    pub async fn group_add(&mut self, group: &GroupId, user: &str) -> Result<(), ClientError> {
        let devices = self.devices_of(user).await?;
        let identity_key = devices
            .first()
            .map(|(_, c)| c.user_identity)
            .ok_or_else(|| ClientError::E2e(format!("{user} has no device that can take part in end-to-end encryption yet")))?;
        let subject = Member { user: user.to_owned(), identity_key };
        self.change_membership(group, MembershipOp::Add, subject).await
    }

    /// Remove `user` from a group (this user must be an admin). Everyone's sender keys are replaced.
    pub async fn group_remove(&mut self, group: &GroupId, user: &str) -> Result<(), ClientError> {
        let subject = self.member_named(group, user).await?;
        self.change_membership(group, MembershipOp::Remove, subject).await
    }

    /// Leave a group.
    pub async fn group_leave(&mut self, group: &GroupId) -> Result<(), ClientError> {
        let me = self.own_member()?;
        self.change_membership(group, MembershipOp::Leave, me).await
    }

    /// Give `user` a role (this user must be an admin or owner ranking at least as high as both roles).
    pub async fn group_set_role(&mut self, group: &GroupId, user: &str, role: Role) -> Result<(), ClientError> {
        let subject = self.member_named(group, user).await?;
        self.change_membership_with(group, MembershipOp::SetRole, subject, vec![role.code()], None).await
    }

    /// Replace the group's permissions (owners only).
    pub async fn group_set_permissions(&mut self, group: &GroupId, permissions: Permissions) -> Result<(), ClientError> {
        let me = self.own_member()?;
        self.change_membership_with(group, MembershipOp::SetPermissions, me, permissions.encode(), None).await
    }

    /// Rename the group, or set its topic: the log gets a commitment, the members the text, end to end.
    pub async fn group_set_info(&mut self, group: &GroupId, kind: InfoKind, text: &str) -> Result<(), ClientError> {
        let limit = if kind == InfoKind::Name { 128 } else { 1024 };
        if text.chars().count() > limit || text.chars().any(char::is_control) {
            return Err(ClientError::Config(format!("at most {limit} characters, without control characters")));
        }
        let (salted, salt) = SaltedText::new(text);
        let commitment = info_commitment(group_bytes(group), kind, &salt, text);
        let op = if kind == InfoKind::Name { MembershipOp::SetName } else { MembershipOp::SetTopic };
        let me = self.own_member()?;
        self.change_membership_with(group, op, me, commitment.to_vec(), Some((kind, salted))).await
    }

    /// Open an invite link (as a member allowed to add members): whoever holds it may read the group's log and join
    /// as a member until it is closed. Returns the link to share (over a channel you trust: it admits anyone).
    pub async fn group_invite_link(&mut self, group: &GroupId) -> Result<String, ClientError> {
        let key = InviteKey::generate(&mut OsRng);
        let me = self.own_member()?;
        self.change_membership_with(group, MembershipOp::AddInvite, me, key.public_key().to_vec(), None).await?;
        Ok(imfree_client_core::groups::invite_link(group, &key.seed()))
    }

    /// Close an invite link of a group.
    pub async fn group_close_invite_link(&mut self, link: &str) -> Result<GroupId, ClientError> {
        let (group, seed) = parse_invite_link(link)?;
        let me = self.own_member()?;
        let key = InviteKey::from_seed(&seed).public_key();
        self.change_membership_with(&group, MembershipOp::RevokeInvite, me, key.to_vec(), None).await?;
        Ok(group)
    }

    /// Join a group through an invite link. The other members learn of it end to end and share their keys; this
    /// device reads what is sent from now on.
    pub async fn group_join(&mut self, link: &str) -> Result<GroupId, ClientError> {
        let (group, seed) = parse_invite_link(link)?;
        let me = self.own_member()?;
        self.invite = Some((group, seed));
        let key = InviteKey::from_seed(&seed);
        let join = move |state: &imfree_crypto::membership::GroupState, joiner: &Member| {
            let head = state.head();
            key.join_data(state.group_id(), head.seq + 1, &head.head, joiner)
        };
        let result = self.change_membership_made(&group, MembershipOp::JoinByInvite, me, &join, None).await;
        self.invite = None;
        result.map(|()| group)
    }

    async fn member_named(&mut self, group: &GroupId, user: &str) -> Result<Member, ClientError> {
        self.synced_group(group).await?.member_named(user)
    }

    fn own_member(&self) -> Result<Member, ClientError> {
        self.group_core().own_member()
    }

    /// The group as verified here, after reading any new log entries from the relay.
    pub async fn group_info(&mut self, group: &GroupId) -> Result<GroupInfo, ClientError> {
        let g = match self.sync_log(group).await {
            Ok(g) => g,
            Err(e) => match self.load_group(group).await? {
                // A refused group still answers what it is and why.
                Some(g) if g.refused().is_some() => g,
                _ => return Err(e),
            },
        };
        // Updates that arrived while the log was read were handled after it: read the group as they left it.
        let g = self.load_group(group).await?.unwrap_or(g);
        Ok(g.info())
    }

    async fn change_membership(&mut self, group: &GroupId, op: MembershipOp, subject: Member) -> Result<(), ClientError> {
        self.change_membership_with(group, op, subject, Vec::new(), None).await
    }

    /// Append a change (with its data) to the log and tell everyone concerned; `text` is the name or topic a
    /// set-name or set-topic entry commits to.
    async fn change_membership_with(
        &mut self,
        group: &GroupId,
        op: MembershipOp,
        subject: Member,
        data: Vec<u8>,
        text: Option<(InfoKind, SaltedText)>,
    ) -> Result<(), ClientError> {
        self.change_membership_made(group, op, subject, &move |_, _| data.clone(), text).await
    }

    /// [`Session::change_membership_with`] for data that depends on where the entry lands in the log (a join).
    async fn change_membership_made(
        &mut self,
        group: &GroupId,
        op: MembershipOp,
        subject: Member,
        data: EntryData<'_>,
        text: Option<(InfoKind, SaltedText)>,
    ) -> Result<(), ClientError> {
        let held = self.hold_group_inbox();
        let result = self.change_membership_held(group, op, subject, data, text).await;
        self.release_group_inbox(held).await?;
        result
    }

    async fn change_membership_held(
        &mut self,
        group: &GroupId,
        op: MembershipOp,
        subject: Member,
        data: EntryData<'_>,
        text: Option<(InfoKind, SaltedText)>,
    ) -> Result<(), ClientError> {
        let mut core = self.group_core();
        let changed = core.change(self, group, op, subject, data, text, now()).await;
        self.record(&mut core).await?;
        let changed = changed?;
        // Everyone concerned learns the new head: the members now, and whoever just left or was removed; and, in a
        // note to self, this user's other devices, so they follow too.
        let content = changed.update.content();
        let me = self.client.user().to_owned();
        for user in changed.told.into_iter().chain(std::iter::once(me)) {
            let item = OutboxItem { id: new_envelope_id(), kind: "control".into(), to: user, mime: mime::E2E.into(), payload: content.encode(), refers: None };
            self.client.store().queue_outbox(&item).await?;
        }
        self.flush_outbox().await?;
        Ok(())
    }

    async fn load_group(&self, group: &GroupId) -> Result<Option<Group>, ClientError> {
        imfree_client_core::groups::load(self.client.store(), group).await
    }

    /// The group, synced, or an error if it is refused or this user left it (unless joining it by invite now).
    async fn synced_group(&mut self, group: &GroupId) -> Result<Group, ClientError> {
        let held = self.hold_group_inbox();
        let mut core = self.group_core();
        let result = core.synced(self, group).await;
        let recorded = self.record(&mut core).await;
        self.release_group_inbox(held).await?;
        recorded?;
        result
    }

    /// Read new entries of a group's log from the relay and verify them against what this device has seen. On a
    /// verification failure the group is marked refused (sending stops, incoming messages are not shown) and the
    /// reason returned.
    pub(crate) async fn sync_log(&mut self, group: &GroupId) -> Result<Group, ClientError> {
        let held = self.hold_group_inbox();
        let mut core = self.group_core();
        let result = core.sync_log(self, group).await;
        let recorded = self.record(&mut core).await;
        self.release_group_inbox(held).await?;
        recorded?;
        result
    }

    async fn system_message(&mut self, group: &GroupId, id: &str, from: &str, text: &str, status: &str) -> Result<(), ClientError> {
        let message = StoredMessage::new(
            id.to_owned(),
            false,
            from.to_owned(),
            String::new(),
            format!("{GROUP_PREFIX}{group}"),
            now_ms(),
            mime::TEXT.into(),
            text.as_bytes().to_vec(),
            status,
        );
        let me = self.client.user().to_owned();
        if self.client.store().insert_incoming(std::slice::from_ref(&message), &me).await?.first() == Some(&true) {
            self.events.push_back(Event::Message(message));
        }
        Ok(())
    }

    /// Encrypt a group message: sync the log, make sure every member device has this device's current sender key
    /// (sent pairwise first, and accepted by the relay before the message goes), then encrypt once for all.
    pub(crate) async fn encrypt_group(&mut self, group: &GroupId, id: &str, content: &[u8]) -> Result<Vec<u8>, ClientError> {
        let held = self.hold_group_inbox();
        let mut core = self.group_core();
        let result = core.encrypt(self, group, id, content, now()).await;
        let recorded = self.record(&mut core).await;
        self.release_group_inbox(held).await?;
        recorded?;
        result
    }

    /// Operations that read a group's row, make round trips to the relay, and write the row back (syncing the log,
    /// sending to the group, changing its members) hold the group inbox: deliveries that arrive during their round
    /// trips are stored in the inbox as always but handled only afterwards — otherwise a sender key stored meanwhile
    /// would be overwritten by the operation's older copy of the row, and that member's messages would be unreadable
    /// here. Returns whether the inbox was already held (by an outer operation, or by the inbox's own handling).
    fn hold_group_inbox(&mut self) -> bool {
        std::mem::replace(&mut self.settling, true)
    }

    /// End a hold: the outermost one handles what arrived meanwhile.
    async fn release_group_inbox(&mut self, held: bool) -> Result<(), ClientError> {
        self.settling = held;
        if held {
            return Ok(());
        }
        // Boxed: handling the inbox syncs logs, which holds the inbox again.
        Box::pin(self.settle_groups()).await
    }

    /// Handle the group inbox: membership updates, sender keys, group messages, in the order they arrived.
    pub(crate) async fn settle_groups(&mut self) -> Result<(), ClientError> {
        if self.settling {
            return Ok(());
        }
        self.settling = true;
        let result = self.settle_inbox().await;
        self.settling = false;
        result
    }

    async fn settle_inbox(&mut self) -> Result<(), ClientError> {
        loop {
            let items = self.client.store().group_inbox().await?;
            if items.is_empty() {
                return Ok(());
            }
            for item in items {
                let seq = item.seq;
                match item.kind.as_str() {
                    "message" => self.handle_group_message(item).await?,
                    "update" => self.handle_update(item).await?,
                    "sender_key" => self.handle_sender_key(item).await?,
                    other => tracing::warn!(kind = other, "unknown group inbox item; dropped"),
                }
                self.client.store().group_inbox_done(seq).await?;
            }
        }
    }

    async fn handle_update(&mut self, item: InboxItem) -> Result<(), ClientError> {
        let mut core = self.group_core();
        let result = core.receive_update(self, &item.from, &item.body).await;
        self.record(&mut core).await?;
        result
    }

    async fn handle_sender_key(&mut self, item: InboxItem) -> Result<(), ClientError> {
        let (Some(identity), Some(device)) = (item.sender_identity.as_deref(), item.sender_device) else { return Ok(()) };
        let (Ok(identity), Ok(device)) = (<[u8; 32]>::try_from(identity), u32::try_from(device)) else { return Ok(()) };
        let mut core = self.group_core();
        let result = core.receive_sender_key(self, &item.from, identity, device, &item.body).await;
        self.record(&mut core).await?;
        result
    }

    async fn handle_group_message(&mut self, item: InboxItem) -> Result<(), ClientError> {
        let group: GroupId = match item.group.parse() {
            Ok(g) => g,
            Err(_) => return Ok(()),
        };
        let mut core = self.group_core();
        let opened = core.open(self, &group, &item.from, &item.envelope_id, &item.body).await;
        self.record(&mut core).await?;
        let outcome = match opened? {
            GroupOpened::Message(inner) => Ok(inner.body),
            GroupOpened::Unreadable(reason) => Err(reason),
        };
        let conversation = format!("{GROUP_PREFIX}{group}");
        let me = self.client.user().to_owned();
        let undecodable = |reason: &str| {
            StoredMessage::new(
                item.envelope_id.clone(),
                item.from == me,
                item.from.clone(),
                item.from_device.clone(),
                conversation.clone(),
                item.ts,
                mime::TEXT.to_owned(),
                format!("[undecodable message: {reason}]").into_bytes(),
                "undecodable",
            )
        };
        let message = match outcome.and_then(|bytes| Content::decode(&bytes).map_err(|e| e.to_string())) {
            Err(reason) => undecodable(&reason),
            Ok(content) => match content.body_bytes(&Limits::default()) {
                Err(e) => undecodable(&e.to_string()),
                Ok(body) => {
                    let mut m = StoredMessage::new(
                        item.envelope_id.clone(),
                        item.from == me,
                        item.from.clone(),
                        item.from_device.clone(),
                        conversation.clone(),
                        item.ts,
                        content.mime.clone(),
                        body,
                        "received",
                    );
                    crate::conversation::describe(&mut m, &content);
                    match crate::conversation::check_clear_reference(&content, item.refers) {
                        Err(reason) => undecodable(reason),
                        Ok(()) => {
                            if let Some(change) = m.change.as_mut()
                                && change.action == crate::store::ChangeAction::Delete
                            {
                                // Whether the sender may delete others' messages is read from the verified log here,
                                // where it is at hand; the store checks the rest.
                                change.by_admin = self.may_delete_others(&group, &item.from).await?;
                            }
                            m
                        }
                    }
                }
            },
        };
        if self.client.store().insert_incoming(std::slice::from_ref(&message), &me).await?.first() == Some(&true) {
            self.events.push_back(Event::Message(message));
        }
        Ok(())
    }

    /// Whether `user`'s role in the group, per the verified membership log this device holds, allows deleting
    /// other members' messages.
    pub(crate) async fn may_delete_others(&mut self, group: &GroupId, user: &str) -> Result<bool, ClientError> {
        may_delete_others(self.client.store(), group, user).await
    }
}

/// Group work found in a delivery batch, to be put in the inbox before the batch is acknowledged.
pub(crate) fn inbox_message(d: &imfree_proto::Deliver, group: &GroupId) -> InboxItem {
    InboxItem {
        seq: 0,
        envelope_id: d.id.to_string(),
        kind: "message".into(),
        group: group.to_string(),
        from: d.from.clone(),
        from_device: d.from_device.clone(),
        ts: d.ts as i64,
        body: d.data.0.clone(),
        sender_identity: None,
        sender_device: None,
        refers: d.refers,
    }
}

/// A pairwise control message (update or sender key) from `peer`, for the inbox; `None` if `content_mime` is not one.
pub(crate) fn inbox_control(d: &imfree_proto::Deliver, content_mime: &str, body: Vec<u8>, peer: &DeviceCertificate) -> Option<InboxItem> {
    let (kind, group) = match content_mime {
        UPDATE_MIME => ("update", serde_json::from_slice::<GroupUpdate>(&body).map(|u| u.group).unwrap_or_default()),
        SENDER_KEY_MIME => ("sender_key", String::new()),
        _ => return None,
    };
    Some(InboxItem {
        seq: 0,
        envelope_id: d.id.to_string(),
        kind: kind.into(),
        group,
        from: d.from.clone(),
        from_device: d.from_device.clone(),
        ts: d.ts as i64,
        body,
        sender_identity: Some(peer.user_identity.to_vec()),
        sender_device: Some(i64::from(peer.device_id)),
        refers: None,
    })
}

/// The relay's group service, asked over this session; answers that arrive meanwhile with other frames are kept.
impl GroupRelay for Session<'_> {
    async fn log_page(&mut self, group: &GroupId, from: u64, invite: Option<InviteProof>) -> Result<GroupEntries, ClientError> {
        let id = new_envelope_id();
        match self.request(FrameBody::GroupLog(GroupLog { id: Some(id.clone()), group: *group, from, invite }), &id).await? {
            FrameBody::GroupEntries(page) => Ok(page),
            _ => Err(ClientError::Protocol("expected group.entries".into())),
        }
    }

    async fn append(&mut self, group: &GroupId, entry: Vec<u8>) -> Result<(), ClientError> {
        let id = new_envelope_id();
        let body = FrameBody::GroupAppend(GroupAppend { id: Some(id.clone()), group: *group, entry: Payload(entry) });
        self.request(body, &id).await.map(|_| ())
    }

    async fn send_now(&mut self, to: &str, id: &str, payloads: Vec<DevicePayload>) -> Result<(), ClientError> {
        let envelope = id.parse().map_err(|_| ClientError::Protocol("bad id".into()))?;
        let send = Send { id: envelope, to: Recipient::User(to.into()), mime: mime::E2E.into(), data: Payload::default(), payloads, refers: None };
        self.conn.send(&Frame::new(FrameBody::Send(send))).await?;
        let answer = self
            .wait_for(std::time::Duration::from_secs(30), |e| match e {
                Event::Accepted { id: a, .. } => a == id,
                Event::Refused(r) => r.reference.as_deref() == Some(id),
                _ => false,
            })
            .await?;
        match answer {
            Event::Refused(r) => Err(ClientError::Refused { code: r.code, message: r.message }),
            _ => Ok(()),
        }
    }
}
