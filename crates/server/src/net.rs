//! Client connections over TCP or a Unix domain socket (`unixsocket`), behind one type
//! the event loops read, write and poll.

use std::io::{self, Read, Write};

use mio::event::Source;
use mio::net::{TcpListener, TcpStream};
#[cfg(unix)]
use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

pub enum ClientStream {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(UnixStream),
}

pub enum Listener {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(UnixListener),
}

/// Where an accepted connection came from.
pub enum Peer {
    Tcp(std::net::SocketAddr),
    Local,
}

impl Listener {
    /// Another handle on the same listening socket, for another event loop's poll.
    pub fn try_clone(&self) -> io::Result<Listener> {
        use std::os::fd::AsFd;
        Ok(match self {
            Listener::Tcp(l) => Listener::Tcp(TcpListener::from_std(std::net::TcpListener::from(
                l.as_fd().try_clone_to_owned()?,
            ))),
            #[cfg(unix)]
            Listener::Unix(l) => Listener::Unix(UnixListener::from_std(
                std::os::unix::net::UnixListener::from(l.as_fd().try_clone_to_owned()?),
            )),
        })
    }

    pub fn accept(&self) -> io::Result<(ClientStream, Peer)> {
        match self {
            Listener::Tcp(l) => l
                .accept()
                .map(|(s, a)| (ClientStream::Tcp(s), Peer::Tcp(a))),
            #[cfg(unix)]
            Listener::Unix(l) => l
                .accept()
                .map(|(s, _)| (ClientStream::Unix(s), Peer::Local)),
        }
    }
}

impl ClientStream {
    /// CLIENT LIST's `addr` and `laddr`: ip:port, or the socket's path and 0.
    pub fn addresses(&self, unix_path: &str) -> (String, String) {
        match self {
            ClientStream::Tcp(s) => (
                s.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
                s.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            ),
            #[cfg(unix)]
            ClientStream::Unix(_) => (format!("{unix_path}:0"), format!("{unix_path}:0")),
        }
    }

    /// A duplicate descriptor of the socket, to shut it down from another thread: it can
    /// never hit a descriptor number the loop closed and the kernel gave to another
    /// connection since.
    pub fn shutdown_handle(&self) -> io::Result<socket2::Socket> {
        match self {
            ClientStream::Tcp(s) => socket2::SockRef::from(s).try_clone(),
            #[cfg(unix)]
            ClientStream::Unix(s) => socket2::SockRef::from(s).try_clone(),
        }
    }

    /// TCP_NODELAY and keepalive; nothing to set on a Unix socket.
    pub fn tune(&self, keepalive_secs: i64) {
        if let ClientStream::Tcp(s) = self {
            let _ = s.set_nodelay(true);
            if keepalive_secs > 0 {
                let ka = socket2::TcpKeepalive::new()
                    .with_time(std::time::Duration::from_secs(keepalive_secs as u64));
                let _ = socket2::SockRef::from(s).set_tcp_keepalive(&ka);
            }
        }
    }

    #[cfg(unix)]
    pub fn raw_fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        match self {
            ClientStream::Tcp(s) => s.as_raw_fd(),
            ClientStream::Unix(s) => s.as_raw_fd(),
        }
    }

    #[cfg(not(unix))]
    pub fn raw_fd(&self) -> i32 {
        -1
    }
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientStream::Tcp(s) => s.read(buf),
            #[cfg(unix)]
            ClientStream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ClientStream::Tcp(s) => s.write(buf),
            #[cfg(unix)]
            ClientStream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Tcp(s) => s.flush(),
            #[cfg(unix)]
            ClientStream::Unix(s) => s.flush(),
        }
    }
}

/// Delegates polling to the socket inside.
macro_rules! delegate_source {
    ($ty:ty, $($variant:ident($inner:ident )),+) => {
        impl Source for $ty {
            fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
                match self { $(Self::$variant($inner ) => $inner.register(r, t, i),)+ }
            }
            fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
                match self { $(Self::$variant($inner ) => $inner.reregister(r, t, i),)+ }
            }
            fn deregister(&mut self, r: &Registry) -> io::Result<()> {
                match self { $(Self::$variant($inner ) => $inner.deregister(r),)+ }
            }
        }
    };
}

#[cfg(unix)]
delegate_source!(ClientStream, Tcp(s), Unix(s));
#[cfg(not(unix))]
delegate_source!(ClientStream, Tcp(s));
#[cfg(unix)]
delegate_source!(Listener, Tcp(l), Unix(l));
#[cfg(not(unix))]
delegate_source!(Listener, Tcp(l));
