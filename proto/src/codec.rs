//! The protobuf codec of every geocache service: prost's, except that a message that does not
//! decode is `INVALID_ARGUMENT` (the sender's fault, retrying it cannot help) instead of prost's
//! `INTERNAL` (which would blame the receiver). Generated code names it through `codec_path` in
//! `build.rs`; the same codec serves both ends, so a client that cannot decode a reply sees
//! `INVALID_ARGUMENT` as well.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// [`ProstCodec`] with decode failures reported as `INVALID_ARGUMENT`.
pub struct GeocacheCodec<T, U> {
    prost: ProstCodec<T, U>,
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for GeocacheCodec<T, U> {
    fn default() -> Self {
        GeocacheCodec { prost: ProstCodec::default(), _types: PhantomData }
    }
}

impl<T, U> Codec for GeocacheCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.prost.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(self.prost.decoder())
    }
}

/// Decodes with prost; a malformed message is the sender's error.
pub struct StrictDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|e| Status::invalid_argument(format!("malformed protobuf message: {}", e.message())))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
