//! The bpf(2) calls that aya 0.14 does not make for us, in one place:
//! object info by fd (program statistics and names, map names), walking a
//! map's keys, and what `collectors::uprobe_multi` needs (program load with
//! an attach type, link create).

use std::{io, os::fd::RawFd};

/// bpf(2) commands (include/uapi/linux/bpf.h).
pub(crate) mod cmd {
    /// BPF_MAP_GET_NEXT_KEY.
    pub const MAP_GET_NEXT_KEY: libc::c_long = 4;
    /// BPF_PROG_LOAD.
    pub const PROG_LOAD: libc::c_long = 5;
    /// BPF_OBJ_GET_INFO_BY_FD.
    pub const OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    /// BPF_LINK_CREATE.
    pub const LINK_CREATE: libc::c_long = 28;
}

/// Calls bpf(2) with `attr`, a repr(C) prefix of `union bpf_attr`; returns
/// what the kernel returned (an fd for the commands that create one).
///
/// Callers must pass a `T` that is a valid, initialised repr(C) prefix of
/// `union bpf_attr` for `cmd`, whose embedded pointers point to memory that
/// lives through the call and has the sizes the attr states.
pub(crate) fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<RawFd> {
    // SAFETY: per the contract above, the kernel reads at most
    // size_of::<T>() bytes of `attr` and only writes through the pointers
    // inside it, within the sizes they come with. A closed fd inside is a
    // plain number: the kernel answers EBADF.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as u32,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as RawFd)
    }
}

/// `union bpf_attr`'s `info` member.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// Fills `info` (a `bpf_prog_info`, `bpf_map_info`, ... prefix: plain
/// integers) for the BPF object behind `fd`.
pub(crate) fn info_by_fd<T>(fd: RawFd, info: &mut T) -> io::Result<()> {
    let mut attr = InfoAttr {
        bpf_fd: fd as u32,
        info_len: size_of::<T>() as u32,
        info: info as *mut T as u64,
    };
    bpf(cmd::OBJ_GET_INFO_BY_FD, &mut attr).map(|_| ())
}

/// `union bpf_attr` for BPF_MAP_GET_NEXT_KEY.
#[repr(C)]
struct NextKeyAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    next_key: u64,
}

/// Writes the key after `key` (the first key when `None`) of the map behind
/// `fd` into `next`; `Ok(false)` when there is none.
pub(crate) fn next_key(fd: RawFd, key: Option<&[u8]>, next: &mut [u8]) -> io::Result<bool> {
    let mut attr = NextKeyAttr {
        map_fd: fd as u32,
        _pad: 0,
        // A null key asks for the first one.
        key: key.map_or(0, |k| k.as_ptr() as u64),
        next_key: next.as_mut_ptr() as u64,
    };
    match bpf(cmd::MAP_GET_NEXT_KEY, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_have_the_kernel_layout() {
        assert_eq!(size_of::<InfoAttr>(), 16);
        assert_eq!(size_of::<NextKeyAttr>(), 24);
        assert_eq!(std::mem::offset_of!(NextKeyAttr, next_key), 16);
    }

    #[test]
    fn a_non_bpf_fd_is_refused() {
        let mut info = [0u64; 8];
        assert!(info_by_fd(0, &mut info).is_err());
        assert!(next_key(-1, None, &mut [0u8; 8]).is_err());
    }
}
