//! TLS 1.3 transport (rustls with aws-lc-rs; post-quantum hybrid key
//! exchange X25519MLKEM768 preferred) and framed message I/O.
//!
//! Server identity: a self-signed certificate created on first start; the
//! client pins it by fingerprint (hex BLAKE3 of the certificate's DER),
//! like SSH host keys — no CA needed on a private network.

use crate::protocol::{
    encode_frame, encode_frame_with, FrameKind, FrameReader, PartialFrame, ProtocolError, DEFAULT_MAX_FRAME_BYTES,
    TRUSTED_RESERVE_AHEAD_BYTES,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Transport failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("connection closed")]
    Closed,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A server's TLS certificate (chain) and key, and the fingerprint clients pin.
#[derive(Clone)]
pub struct ServerIdentity {
    /// The server's certificate first, then any intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    pub fingerprint: String,
}

impl std::fmt::Debug for ServerIdentity {
    // The private key never reaches a log.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("ServerIdentity").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

/// Certificates from a PEM file (every CERTIFICATE block) or one DER certificate.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    use rustls::pki_types::pem::PemObject;
    let bytes = std::fs::read(path)?;
    let bad = |why: String| TransportError::Tls(format!("{}: {why}", path.display()));
    if bytes.starts_with(b"-----BEGIN") {
        let certificates = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| bad(error.to_string()))?;
        if certificates.is_empty() {
            return Err(bad("no certificate in the file".into()));
        }
        Ok(certificates)
    } else {
        Ok(vec![CertificateDer::from(bytes)])
    }
}

/// A private key from a PEM file (PKCS#8, PKCS#1 or SEC1) or PKCS#8 DER.
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TransportError> {
    use rustls::pki_types::pem::PemObject;
    let bytes = std::fs::read(path)?;
    if bytes.starts_with(b"-----BEGIN") {
        PrivateKeyDer::from_pem_slice(&bytes)
            .map_err(|error| TransportError::Tls(format!("{}: {error}", path.display())))
    } else {
        Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(bytes)))
    }
}

/// The fingerprint clients pin: hex BLAKE3 of the certificate's DER bytes.
pub fn fingerprint_of(certificate: &[u8]) -> String {
    blake3::hash(certificate).to_hex().to_string()
}

impl ServerIdentity {
    /// Loads `tls.crt.der` / `tls.key.der` from `dir`, creating them (a
    /// self-signed certificate for `localhost`) on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, TransportError> {
        let (certificate_path, key_path) = (dir.join("tls.crt.der"), dir.join("tls.key.der"));
        if !certificate_path.exists() {
            let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "atedb".to_string()])
                .map_err(|error| TransportError::Tls(error.to_string()))?;
            std::fs::write(&certificate_path, generated.cert.der().as_ref())?;
            crate::cli::write_secret_file(&key_path, &generated.signing_key.serialize_der())
                .map_err(|error| TransportError::Tls(error.to_string()))?;
        }
        Self::from_files(&certificate_path, &key_path)
    }

    /// A certificate chain and key from files (PEM, or DER): for example
    /// issued by a CA that clients verify against instead of pinning.
    pub fn from_files(certificate_chain: &Path, key: &Path) -> Result<Self, TransportError> {
        let chain = read_certificates(certificate_chain)?;
        let key = read_private_key(key)?;
        let fingerprint = fingerprint_of(chain[0].as_ref());
        let identity = Self { chain, key: Arc::new(key), fingerprint };
        // A certificate that does not match its key fails here, at start.
        identity.server_config()?;
        Ok(identity)
    }

    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TransportError> {
        let config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|error| TransportError::Tls(error.to_string()))?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|error| TransportError::Tls(error.to_string()))?;
        Ok(Arc::new(config))
    }
}

/// Accepts exactly the server certificate with the pinned fingerprint (or,
/// trusting on first use, any certificate, recording its fingerprint), and
/// checks the handshake signature with it.
#[derive(Debug)]
struct PinnedCertificate {
    /// `None`: trust on first use.
    fingerprint: Option<String>,
    seen: std::sync::Mutex<Option<String>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = fingerprint_of(end_entity.as_ref());
        match &self.fingerprint {
            Some(pinned) if *pinned != seen => {
                Err(rustls::Error::General(format!("server certificate fingerprint {seen} is not the pinned {pinned}")))
            }
            _ => {
                *self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(seen);
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _certificate: &CertificateDer<'_>,
        _signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A client configuration that trusts only the server with `fingerprint`.
pub fn pinned_client_config(fingerprint: &str) -> Result<Arc<ClientConfig>, TransportError> {
    Ok(client_config(Some(fingerprint.to_lowercase()))?.0)
}

/// Trust on first use: accepts the server's certificate and reports its
/// fingerprint (read it after the handshake, then pin it for next time).
pub fn first_use_client_config() -> Result<(Arc<ClientConfig>, FingerprintSeen), TransportError> {
    client_config(None)
}

/// A client configuration that verifies the server's certificate chain
/// against the CA certificates in `roots` (PEM bundle or one DER
/// certificate), and the server's name against the certificate.
pub fn ca_client_config(roots: &Path) -> Result<Arc<ClientConfig>, TransportError> {
    let mut store = rustls::RootCertStore::empty();
    for certificate in read_certificates(roots)? {
        store.add(certificate).map_err(|error| TransportError::Tls(format!("{}: {error}", roots.display())))?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| TransportError::Tls(error.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The fingerprint a trust-on-first-use handshake saw.
#[derive(Debug, Clone)]
pub struct FingerprintSeen(Arc<PinnedCertificate>);

impl FingerprintSeen {
    pub fn get(&self) -> Option<String> {
        self.0.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

fn client_config(fingerprint: Option<String>) -> Result<(Arc<ClientConfig>, FingerprintSeen), TransportError> {
    let provider = provider();
    let verifier = Arc::new(PinnedCertificate { fingerprint, seen: Default::default(), provider: provider.clone() });
    let seen = FingerprintSeen(Arc::clone(&verifier));
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| TransportError::Tls(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok((Arc::new(config), seen))
}

/// Reads frames of one kind from a stream, bounded by the frame limit.
#[derive(Debug)]
pub struct FramedReader<R> {
    stream: R,
    frames: FrameReader,
    expect: FrameKind,
    /// Room a large message gets before its bytes arrive: none for a peer
    /// that has not authenticated (it makes this side hold only what it
    /// sent), more once it has ([`FramedReader::trust_peer`]).
    reserve_ahead: usize,
}

impl<R: AsyncRead + Unpin> FramedReader<R> {
    pub fn new(stream: R, expect: FrameKind) -> Self {
        Self { stream, frames: FrameReader::new(DEFAULT_MAX_FRAME_BYTES), expect, reserve_ahead: 0 }
    }

    /// The peer authenticated: a large message's buffer is now reserved
    /// ahead of its bytes ([`TRUSTED_RESERVE_AHEAD_BYTES`]), so that it is
    /// not copied to grow.
    pub fn trust_peer(&mut self) {
        self.reserve_ahead = TRUSTED_RESERVE_AHEAD_BYTES;
    }

    /// The next message body; `Closed` at a clean end of stream. Not
    /// cancel-safe: a message being read is lost if the future is dropped
    /// (every caller then drops the connection too).
    pub async fn next(&mut self) -> Result<Vec<u8>, TransportError> {
        loop {
            if let Some((kind, body)) = self.frames.next_frame()? {
                return self.expected(kind).map(|()| body);
            }
            // A large message is read straight into a buffer of its own:
            // through the frame buffer it was copied twice more.
            if let Some(partial) = self.frames.take_partial(DIRECT_READ_MIN_BYTES, self.reserve_ahead)? {
                self.expected(partial.kind)?;
                return self.read_rest(partial).await;
            }
            let buffer = self.frames.room(READ_BYTES);
            if self.stream.read_buf(buffer).await? == 0 {
                return Err(TransportError::Closed);
            }
            self.frames.received()?;
        }
    }

    fn expected(&self, kind: FrameKind) -> Result<(), TransportError> {
        if kind != self.expect {
            return Err(ProtocolError::UnknownFrameKind(kind as u8).into());
        }
        Ok(())
    }

    /// Reads the rest of a large message, growing its buffer as bytes
    /// arrive (doubling, up to the announced length, which the frame limit
    /// bounds).
    async fn read_rest(&mut self, partial: PartialFrame) -> Result<Vec<u8>, TransportError> {
        let PartialFrame { mut body, length, .. } = partial;
        while body.len() < length {
            if body.len() == body.capacity() {
                body.reserve_exact(body.len().max(READ_BYTES).min(length - body.len()));
            }
            let room = (body.capacity() - body.len()).min(length - body.len());
            if (&mut self.stream).take(room as u64).read_buf(&mut body).await? == 0 {
                return Err(TransportError::Closed);
            }
        }
        Ok(body)
    }
}

/// Bytes asked of the stream per read into the frame buffer.
const READ_BYTES: usize = 16 << 10;

/// Messages at least this long are read into their own buffer
/// ([`FramedReader::next`]); shorter ones, often many to a read, come out of
/// the shared frame buffer.
const DIRECT_READ_MIN_BYTES: usize = 8 << 10;

/// How many bytes of queued frames [`write_queued`] gathers into one write.
const COALESCED_WRITE_BYTES: usize = 256 << 10;

/// Writes shorter than this wait one scheduling round for more messages
/// when more are likely ([`write_queued`]).
const PAUSE_BEFORE_WRITES_UNDER_BYTES: usize = 16 << 10;

/// Sends what `queue` yields as frames until it closes. Whatever is already
/// queued behind a message goes out in the same write and flush (up to
/// `COALESCED_WRITE_BYTES`): one TLS record run and one syscall for many
/// small frames, instead of a wakeup and a flush per frame. `more_coming`
/// says whether other requests are outstanding, so that more messages are
/// likely within a scheduling round.
pub async fn write_queued<W, M>(
    stream: &mut W,
    kind: FrameKind,
    queue: &mut tokio::sync::mpsc::Receiver<M>,
    encode_into: impl Fn(&M, &mut Vec<u8>),
    more_coming: impl Fn() -> bool,
) -> Result<(), TransportError>
where
    W: AsyncWrite + Unpin,
{
    let mut buffer = Vec::with_capacity(COALESCED_WRITE_BYTES);
    // Each message is encoded straight into the write buffer.
    let add = |message: &M, buffer: &mut Vec<u8>| {
        encode_frame_with(kind, DEFAULT_MAX_FRAME_BYTES, buffer, |out| encode_into(message, out))
    };
    while let Some(message) = queue.recv().await {
        buffer.clear();
        add(&message, &mut buffer)?;
        let mut may_wait = true;
        while buffer.len() < COALESCED_WRITE_BYTES {
            match queue.try_recv() {
                Ok(message) => add(&message, &mut buffer)?,
                // With other requests outstanding, their messages come in
                // bursts (a group of commits turns durable; replies release
                // the next requests together): letting the ready tasks run
                // once puts the rest of the burst into this write instead of
                // a syscall each. Only for small writes, whose syscall and
                // TLS record cost more than their bytes: with large ones
                // (fan-out's event batches, 64 KiB commits) the pause cost
                // D4 18-22% of its rate. With nothing else outstanding it
                // would only add latency.
                Err(_) if may_wait && buffer.len() < PAUSE_BEFORE_WRITES_UNDER_BYTES && more_coming() => {
                    may_wait = false;
                    tokio::task::yield_now().await;
                }
                Err(_) => break,
            }
        }
        stream.write_all(&buffer).await?;
        stream.flush().await?;
        // A burst of large frames must not pin its buffer for the connection's life.
        if buffer.capacity() > 4 * COALESCED_WRITE_BYTES {
            buffer = Vec::with_capacity(COALESCED_WRITE_BYTES);
        }
    }
    Ok(())
}

/// Writes one message as a frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    stream: &mut W,
    kind: FrameKind,
    body: &[u8],
) -> Result<(), TransportError> {
    let mut frame = Vec::with_capacity(body.len() + 5);
    encode_frame(kind, body, DEFAULT_MAX_FRAME_BYTES, &mut frame)?;
    stream.write_all(&frame).await?;
    stream.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn framed_reader_returns_small_and_large_messages_whole_from_any_split() {
        let sizes = [3usize, 70_000, 0, 300_000, 17, 9_000, 3 << 20, 5, 8 << 10];
        let messages: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(index, size)| (0..*size).map(|at| (at * 13 + index) as u8).collect())
            .collect();
        let mut wire = Vec::new();
        for message in &messages {
            encode_frame(FrameKind::Server, message, DEFAULT_MAX_FRAME_BYTES, &mut wire).unwrap();
        }
        // Untrusted peers' large messages grow as they arrive; trusted ones
        // have room reserved ahead.
        for (pipe_bytes, trusted) in [(7usize, false), (4096, false), (1 << 20, false), (4096, true), (1 << 20, true)] {
            let (mut near, far) = tokio::io::duplex(pipe_bytes);
            let sent = wire.clone();
            let writer = tokio::spawn(async move { near.write_all(&sent).await });
            let mut reader = FramedReader::new(far, FrameKind::Server);
            if trusted {
                reader.trust_peer();
            }
            for message in &messages {
                assert_eq!(&reader.next().await.unwrap(), message, "pipe of {pipe_bytes} bytes");
            }
            writer.await.unwrap().unwrap();
            assert!(matches!(reader.next().await, Err(TransportError::Closed)));
        }
    }

    #[tokio::test]
    async fn framed_reader_reports_a_stream_cut_inside_a_large_message() {
        let mut wire = Vec::new();
        encode_frame(FrameKind::Server, &vec![1u8; 100_000], DEFAULT_MAX_FRAME_BYTES, &mut wire).unwrap();
        wire.truncate(50_000);
        let mut reader = FramedReader::new(&wire[..], FrameKind::Server);
        assert!(matches!(reader.next().await, Err(TransportError::Closed)));
        let mut client_frame = Vec::new();
        encode_frame(FrameKind::Client, &vec![1u8; 100_000], DEFAULT_MAX_FRAME_BYTES, &mut client_frame).unwrap();
        let mut reader = FramedReader::new(&client_frame[..], FrameKind::Server);
        assert!(matches!(reader.next().await, Err(TransportError::Protocol(ProtocolError::UnknownFrameKind(1)))));
    }

    /// Counts flushes: `write_queued` flushes once per coalesced write.
    #[derive(Default)]
    struct CountingWriter {
        bytes: Vec<u8>,
        flushes: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl AsyncWrite for CountingWriter {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.bytes.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            self.flushes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// A small message queued by a task that is ready to run joins the write
    /// in progress when more messages are expected, and goes out on its own
    /// when none are (or when the write is already large).
    #[tokio::test(flavor = "current_thread")]
    async fn small_writes_wait_one_round_for_ready_senders_only_when_more_are_coming() {
        for (more_coming, first_len, expected_writes) in
            [(true, 10, 1), (false, 10, 2), (true, PAUSE_BEFORE_WRITES_UNDER_BYTES, 2)]
        {
            let (sender, mut queue) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
            let flushes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut stream = CountingWriter { bytes: Vec::new(), flushes: Arc::clone(&flushes) };
            let writer = tokio::spawn(async move {
                let encode = |message: &Vec<u8>, out: &mut Vec<u8>| out.extend_from_slice(message);
                write_queued(&mut stream, FrameKind::Client, &mut queue, encode, move || more_coming).await.unwrap();
                stream.bytes
            });
            // The writer wakes for the first message; the second sender is
            // ready to run by then but has not sent yet.
            sender.send(vec![1; first_len]).await.unwrap();
            let second = sender.clone();
            tokio::spawn(async move { second.send(vec![2; 3]).await.unwrap() });
            drop(sender);
            let bytes = writer.await.unwrap();
            let case = format!("more coming {more_coming}, first message {first_len} bytes");
            assert_eq!(flushes.load(std::sync::atomic::Ordering::Relaxed), expected_writes, "{case}");
            let mut reader = FramedReader::new(&bytes[..], FrameKind::Client);
            assert_eq!(reader.next().await.unwrap(), vec![1; first_len], "{case}");
            assert_eq!(reader.next().await.unwrap(), vec![2; 3], "{case}");
        }
    }
}
