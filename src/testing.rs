//! Test helpers shared by unit tests in several modules.
use std::future::Future;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Tests that set DOCKER_HOST / OLLAMA_HOST take this lock so they do not
/// see each other's values.
pub static ENV_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[cfg(unix)]
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

/// Serves canned HTTP responses, one per connection, chosen by request path.
pub async fn serve_http<L, S>(listener: L, routes: Vec<(&'static str, &'static str)>)
where
    L: AcceptOne<S> + Send + 'static,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        while let Some(mut stream) = listener.accept_one().await {
            let routes = routes.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf);
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, body) = routes
                    .iter()
                    .find(|(suffix, _)| path.ends_with(suffix))
                    .map(|(_, body)| ("200 OK", *body))
                    .unwrap_or(("404 Not Found", "{\"message\":\"page not found\"}"));
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
}

pub trait AcceptOne<S> {
    fn accept_one(&self) -> impl Future<Output = Option<S>> + Send;
}
impl AcceptOne<tokio::net::TcpStream> for tokio::net::TcpListener {
    async fn accept_one(&self) -> Option<tokio::net::TcpStream> {
        self.accept().await.ok().map(|(s, _)| s)
    }
}
#[cfg(unix)]
impl AcceptOne<tokio::net::UnixStream> for tokio::net::UnixListener {
    async fn accept_one(&self) -> Option<tokio::net::UnixStream> {
        self.accept().await.ok().map(|(s, _)| s)
    }
}
