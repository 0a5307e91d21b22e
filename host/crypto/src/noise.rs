//! IMF Noise session handshake (being written).
