//! The browser's WebSocket as a stream of messages: the bytes the client core's handshakes and sealed channel
//! produce go out as binary messages; what arrives is queued for the reader.

use std::cell::RefCell;
use std::rc::Rc;

use futures_channel::{mpsc, oneshot};
use imfree_client_core::ClientError;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, CloseEvent, Event, MessageEvent, WebSocket};

/// What the socket hands to its reader.
pub(crate) enum Incoming {
    /// A binary message (handshake or sealed frame).
    Binary(Vec<u8>),
    /// A text message (the relay's plaintext error frames).
    Text(String),
    /// The connection ended, and why.
    Closed(String),
}

/// An open WebSocket. Dropping it closes the connection.
pub(crate) struct Socket {
    ws: WebSocket,
    _handlers: [Closure<dyn FnMut(Event)>; 3],
    _on_message: Closure<dyn FnMut(MessageEvent)>,
}

impl Socket {
    /// Connect to `url` and wait until the connection is open.
    pub(crate) async fn open(url: &str) -> Result<(Socket, mpsc::UnboundedReceiver<Incoming>), ClientError> {
        let ws = WebSocket::new(url).map_err(|e| ClientError::Io(format!("cannot open a WebSocket to {url}: {}", describe(&e))))?;
        ws.set_binary_type(BinaryType::Arraybuffer);
        let (tx, rx) = mpsc::unbounded();
        let (opened_tx, opened_rx) = oneshot::channel::<Result<(), String>>();
        let opened = Rc::new(RefCell::new(Some(opened_tx)));

        let on_open = {
            let opened = opened.clone();
            Closure::<dyn FnMut(Event)>::new(move |_: Event| {
                if let Some(tx) = opened.borrow_mut().take() {
                    let _ = tx.send(Ok(()));
                }
            })
        };
        let on_message = {
            let tx = tx.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
                let data = event.data();
                let incoming = if let Some(buffer) = data.dyn_ref::<js_sys::ArrayBuffer>() {
                    Incoming::Binary(js_sys::Uint8Array::new(buffer).to_vec())
                } else if let Some(text) = data.as_string() {
                    Incoming::Text(text)
                } else {
                    return;
                };
                let _ = tx.unbounded_send(incoming);
            })
        };
        let on_close = {
            let (tx, opened) = (tx.clone(), opened.clone());
            Closure::<dyn FnMut(Event)>::new(move |event: Event| {
                let reason = match event.dyn_ref::<CloseEvent>() {
                    Some(close) if !close.reason().is_empty() => format!("closed ({}: {})", close.code(), close.reason()),
                    Some(close) => format!("closed ({})", close.code()),
                    None => "closed".to_owned(),
                };
                if let Some(waiting) = opened.borrow_mut().take() {
                    let _ = waiting.send(Err(reason.clone()));
                }
                let _ = tx.unbounded_send(Incoming::Closed(reason));
            })
        };
        // An error event is always followed by a close event, which says the rest.
        let on_error = {
            let opened = opened.clone();
            Closure::<dyn FnMut(Event)>::new(move |_: Event| {
                if let Some(waiting) = opened.borrow_mut().take() {
                    let _ = waiting.send(Err("the connection failed".into()));
                }
            })
        };
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        ws.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        let socket = Socket { ws, _handlers: [on_open, on_close, on_error], _on_message: on_message };
        match opened_rx.await {
            Ok(Ok(())) => Ok((socket, rx)),
            Ok(Err(reason)) => Err(ClientError::Io(format!("cannot connect to the relay: {reason}"))),
            Err(_) => Err(ClientError::Io("cannot connect to the relay".into())),
        }
    }

    /// Send one binary message.
    pub(crate) fn send(&self, bytes: &[u8]) -> Result<(), ClientError> {
        self.ws.send_with_u8_array(bytes).map_err(|e| ClientError::Io(format!("sending: {}", describe(&e))))
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
        let _ = self.ws.close();
    }
}

/// A JavaScript exception as text.
pub(crate) fn describe(value: &JsValue) -> String {
    value
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| value.as_string())
        .unwrap_or_else(|| format!("{value:?}"))
}
