use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
                  SendAncillaryMessage, SendFlags};
use std::{io::{IoSlice, IoSliceMut}, mem::MaybeUninit, os::fd::{AsFd, OwnedFd}};

/// Sends "hi" with /etc/hostname's descriptor; returns the descriptors that came back.
fn pass_a_file(socket: &str) -> std::io::Result<Vec<OwnedFd>> {
    let stream = std::os::unix::net::UnixStream::connect(socket)?;
    let file = std::fs::File::open("/etc/hostname")?;
    let fds = [file.as_fd()]; // declared before `control`, which borrows it
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(&stream, &[IoSlice::new(b"hi")], &mut control, SendFlags::empty())?;

    let mut buf = [0u8; 64];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(&stream, &mut [IoSliceMut::new(&mut buf)], &mut control,
                                   RecvFlags::CMSG_CLOEXEC)?;
    assert_eq!(&buf[..got.bytes], b"hi");
    let mut back = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            back.extend(fds); // the same open file as `file`, not a copy
        }
    }
    Ok(back)
}
