//! Device linking, end to end: a device that logged in with the password (a relay device and token, but no
//! end-to-end keys) joins the account's end-to-end identity only when an existing device approves it.
//!
//! The NEW device shows the code (`imfree client devices link`): a [`LinkCode`] as text and as a QR payload naming
//! its own agreement key. The EXISTING device enters or scans it (`imfree client devices approve CODE`), is shown the
//! new device's fingerprint and name, and approves. Both join the relay rendezvous named by
//! [`LinkCode::rendezvous_id`] (`link.open`), and run `imfree_crypto::linking`'s Noise XXpsk3 over `link.data`
//! frames; the new device is the Noise initiator. The grant carries the user identity and the new device's
//! certificate; the new device then publishes its first prekeys. A wrong code meets nobody at the relay (the
//! rendezvous id is derived from the code), so both sides time out; a tampered exchange fails the handshake; either
//! way nothing is linked.
//!
//! It owns the flow and its messages to the user; the handshake is imfree-crypto's, the relay only forwards.

use std::time::Duration;

use imfree_crypto::identity::DeviceCertificate;
use imfree_crypto::linking::{ExistingDeviceLink, LinkCode, LinkError, NewDeviceLink, QR_PREFIX};
use imfree_proto::{ErrorCode, Frame, FrameBody, LinkClose, LinkData, LinkOpen, LinkPaired, Payload};
use rand_core::{OsRng, RngCore};
use tokio::time::Instant;

use crate::devices::device_fingerprint;
use imfree_client_core::device::DeviceE2e;
use crate::engine::{Client, Event, Session, new_envelope_id};
use crate::{ClientError, now_ms};

/// What the new device shows.
#[derive(Clone)]
pub struct LinkInvitation {
    /// The code to type on the existing device (26 base32 characters in groups of five).
    pub code: String,
    /// The QR payload text (also accepted by `devices approve`): the code and this device's key fingerprint.
    pub qr_payload: String,
    /// This device's fingerprint, to compare with what the existing device shows.
    pub fingerprint: String,
}

impl std::fmt::Debug for LinkInvitation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkInvitation").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

/// The device asking to be linked, as the existing device sees it before approving.
#[derive(Debug, Clone)]
pub struct LinkRequest {
    /// Its relay device id (as the relay says; informative).
    pub relay_device: Option<String>,
    /// Its name (as the relay says; informative).
    pub name: Option<String>,
    /// Its agreement-key fingerprint, proven in the handshake: compare it with what the new device shows.
    pub fingerprint: String,
    /// Whether the code was a QR payload whose key fingerprint the new device's key matched.
    pub key_checked: bool,
    /// The certificate id it will get.
    pub device_id: u32,
}

fn link_error(e: LinkError) -> ClientError {
    ClientError::E2e(e.to_string())
}

/// One side's view of the rendezvous on a session.
struct Rendezvous<'s, 'c> {
    session: &'s mut Session<'c>,
    id: String,
    deadline: Instant,
}

impl<'s, 'c> Rendezvous<'s, 'c> {
    /// Join the rendezvous and wait until the other device has joined too.
    async fn join(session: &'s mut Session<'c>, code: &LinkCode, timeout: Duration) -> Result<(Self, LinkPaired), ClientError> {
        let id = code.rendezvous_id();
        let request = new_envelope_id();
        session.send_frame(&Frame::new(FrameBody::LinkOpen(LinkOpen { id: Some(request.clone()), rendezvous: id.clone() }))).await?;
        let answer = session
            .wait_for(Duration::from_secs(30), |e| match e {
                Event::Ok(Some(r)) => *r == request,
                Event::Refused(e) => e.reference.as_deref() == Some(&request),
                _ => false,
            })
            .await?;
        if let Event::Refused(e) = answer {
            return Err(ClientError::Refused { code: e.code, message: e.message });
        }
        let mut rendezvous = Rendezvous { session, id, deadline: Instant::now() + timeout };
        let paired = match rendezvous.next().await {
            Ok(FrameBody::LinkPaired(p)) => p,
            Ok(FrameBody::LinkClose(c)) => return Err(ended(&c)),
            Ok(_) => return Err(rendezvous.fail("the other device spoke before joining").await),
            Err(ClientError::Io(_)) => {
                rendezvous.close("timed out").await;
                return Err(ClientError::Io(format!(
                    "no device joined with this code within {} s: check the code (a mistyped code meets nobody) and start again",
                    timeout.as_secs()
                )));
            }
            Err(e) => return Err(e),
        };
        Ok((rendezvous, paired))
    }

    /// The next linking frame of this rendezvous (paired, data, close).
    async fn next(&mut self) -> Result<FrameBody, ClientError> {
        let id = self.id.clone();
        let left = self.deadline.saturating_duration_since(Instant::now());
        let event = self
            .session
            .wait_for(left, |e| match e {
                Event::Link(f) => match &f.body {
                    FrameBody::LinkPaired(p) => p.rendezvous == id,
                    FrameBody::LinkData(d) => d.rendezvous == id,
                    FrameBody::LinkClose(c) => c.rendezvous == id,
                    _ => false,
                },
                Event::Refused(e) => matches!(e.code, ErrorCode::LinkBusy | ErrorCode::LinkUnknown | ErrorCode::LinkLimit),
                _ => false,
            })
            .await?;
        match event {
            Event::Link(f) => Ok(f.body),
            Event::Refused(e) => Err(ClientError::Refused { code: e.code, message: e.message }),
            _ => Err(ClientError::Protocol("unexpected linking event".into())),
        }
    }

    async fn recv(&mut self) -> Result<Vec<u8>, ClientError> {
        match self.next().await {
            Ok(FrameBody::LinkData(d)) => Ok(d.data.0),
            Ok(FrameBody::LinkClose(c)) => Err(ended(&c)),
            Ok(_) => Err(self.fail("unexpected linking message").await),
            Err(ClientError::Io(_)) => {
                self.close("timed out").await;
                Err(ClientError::Io("the other device stopped answering; nothing was linked: start again".into()))
            }
            Err(e) => Err(e),
        }
    }

    async fn send(&mut self, data: Vec<u8>) -> Result<(), ClientError> {
        self.session.send_frame(&Frame::new(FrameBody::LinkData(LinkData { rendezvous: self.id.clone(), data: Payload(data) }))).await
    }

    async fn close(&mut self, reason: &str) {
        let frame = Frame::new(FrameBody::LinkClose(LinkClose { rendezvous: self.id.clone(), reason: Some(reason.to_owned()) }));
        let _ = self.session.send_frame(&frame).await;
    }

    /// Tell the other side and return the error for this one.
    async fn fail(&mut self, reason: &str) -> ClientError {
        self.close(&format!("the other device refused: {reason}")).await;
        ClientError::E2e(format!("device linking failed: {reason}; nothing was linked"))
    }
}

impl Client {
    /// On a NEW device (logged in with the password, no end-to-end keys yet): make a link code, `show` it, wait up to
    /// `timeout` for an existing device of the account to approve, then store the user identity and this device's
    /// certificate and publish its first keys. Returns the certificate.
    pub async fn link_this_device(&self, show: impl FnOnce(&LinkInvitation), timeout: Duration) -> Result<DeviceCertificate, ClientError> {
        if self.e2e_ready() {
            return Err(ClientError::Config("this device already has end-to-end keys: it is linked".into()));
        }
        let keys = self.account().device_keys()?;
        let code = LinkCode::generate(&mut OsRng);
        show(&LinkInvitation {
            code: code.to_text(),
            qr_payload: code.qr_payload(&keys.static_public()),
            fingerprint: device_fingerprint(&keys.static_public()),
        });
        let mut session = self.connect().await?;
        let (mut link, _) = Rendezvous::join(&mut session, &code, timeout).await?;
        let (state, m1) = NewDeviceLink::start(&code, None, &keys).map_err(link_error)?;
        link.send(m1).await?;
        let m2 = link.recv().await?;
        let (state, m3) = match state.read_reply(&m2) {
            Ok(x) => x,
            Err(e) => return Err(fail_with(&mut link, e).await),
        };
        link.send(m3).await?;
        let m4 = link.recv().await?;
        let linked = match state.finish(&m4, &keys) {
            Ok(l) => l,
            Err(e) => return Err(fail_with(&mut link, e).await),
        };
        let certificate = linked.certificate.clone();
        let mut e2e = DeviceE2e::linked(keys, linked.identity, linked.certificate);
        let upload = e2e.first_upload(&link.session.key_challenge, crate::now_secs());
        if let Err(e) = link.session.upload(&upload).await {
            link.close("the new device could not publish its keys").await;
            return Err(e);
        }
        self.store().put_e2e_state(&e2e.state()).await?;
        self.set_e2e(e2e);
        link.close("linked").await;
        session.ping(Duration::from_secs(10)).await?;
        session.close().await;
        tracing::debug!(device_id = certificate.device_id, "this device was linked");
        Ok(certificate)
    }

    /// On an EXISTING device that holds the user identity: link the new device that shows `code` (the typed code,
    /// or its QR payload text, which also pins the new device's key). `confirm` sees the new device's fingerprint and
    /// name and decides; nothing is sent to the new device before it agrees. Waits up to `timeout` for the new device.
    pub async fn approve_link(
        &self,
        code: &str,
        confirm: impl FnOnce(&LinkRequest) -> bool,
        timeout: Duration,
    ) -> Result<LinkRequest, ClientError> {
        let code = code.trim();
        let (code, expected) = if code.starts_with(QR_PREFIX) {
            let (c, fp) = LinkCode::parse_qr(code).map_err(link_error)?;
            (c, Some(fp))
        } else {
            (LinkCode::parse(code).map_err(link_error)?, None)
        };
        let has_identity = self.with_e2e(|e| Ok(e.identity().is_some()))?;
        if !has_identity {
            return Err(ClientError::E2e("this device does not hold the user identity, so it cannot approve devices".into()));
        }
        let keys = self.account().device_keys()?;
        let mut session = self.connect().await?;
        // A certificate id no current or revoked device of the account has.
        let devices = session.account_devices().await?;
        let taken: Vec<u32> =
            devices.active.iter().map(|d| d.certificate.device_id).chain(devices.revoked.iter().map(|r| r.device_id)).collect();
        let device_id = loop {
            let id = OsRng.next_u32();
            if !taken.contains(&id) {
                break id;
            }
        };
        let (mut link, paired) = Rendezvous::join(&mut session, &code, timeout).await?;
        let m1 = link.recv().await?;
        let (state, m2) = match ExistingDeviceLink::expecting(&code, expected, &keys).and_then(|s| s.respond(&m1)) {
            Ok(x) => x,
            Err(e) => return Err(fail_with(&mut link, e).await),
        };
        link.send(m2).await?;
        let m3 = link.recv().await?;
        let pending = match state.read_confirm(&m3) {
            Ok(p) => p,
            Err(e) => return Err(fail_with(&mut link, e).await),
        };
        let request = LinkRequest {
            relay_device: paired.device,
            name: paired.device_name,
            fingerprint: device_fingerprint(&pending.agreement_key),
            key_checked: expected.is_some(),
            device_id,
        };
        if !confirm(&request) {
            link.close("not approved on the existing device").await;
            return Err(ClientError::Config("not approved: nothing was linked".into()));
        }
        let now = (now_ms() / 1000) as u64;
        let (m4, _certificate) = self.with_e2e(|e| {
            let identity = e.identity().ok_or_else(|| ClientError::E2e("this device does not hold the user identity".into()))?;
            pending.approve(identity, device_id, now).map_err(link_error)
        })?;
        link.send(m4).await?;
        // The new device closes the rendezvous once its keys are published.
        link.deadline = Instant::now() + Duration::from_secs(60);
        let outcome = match link.next().await {
            Ok(FrameBody::LinkClose(c)) if c.reason.as_deref() == Some("linked") => Ok(request),
            // The grant was sent: the new device holds the identity even if it could not finish.
            Ok(FrameBody::LinkClose(c)) => Err(ClientError::E2e(format!(
                "the new device received the grant but reported: {}; run `imfree client devices` and revoke it if it is listed and unwanted",
                c.reason.as_deref().unwrap_or("nothing")
            ))),
            Err(ClientError::Io(_)) => Err(ClientError::Io(
                "the new device did not confirm in time; run `imfree client devices` to see whether it published its keys".into(),
            )),
            Err(e) => Err(e),
            Ok(_) => Err(ClientError::Protocol("unexpected linking message after the grant".into())),
        };
        session.close().await;
        outcome
    }
}

fn ended(close: &LinkClose) -> ClientError {
    ClientError::E2e(format!("linking ended: {}; nothing was linked", close.reason.as_deref().unwrap_or("the other device left")))
}

async fn fail_with(link: &mut Rendezvous<'_, '_>, e: LinkError) -> ClientError {
    link.close(&format!("the other device refused: {e}")).await;
    link_error(e)
}
