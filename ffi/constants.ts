// Kernel and glibc constants, with their C names so man pages and grep agree.

export const CLONE_VM = 0x00000100;
export const CLONE_VFORK = 0x00004000;
export const CLONE_NEWNS = 0x00020000;
export const CLONE_NEWUSER = 0x10000000;
export const SIGCHLD = 17;

export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_PEERCRED = 17;
export const SO_RCVTIMEO = 20;
export const SCM_RIGHTS = 1;
export const MSG_CMSG_CLOEXEC = 0x40000000;
export const SHUT_RDWR = 2;
export const MSG_DONTWAIT = 0x40;

export const MS_RDONLY = 1;
export const MS_NOSUID = 2;
export const MS_NODEV = 4;
export const MS_NOEXEC = 8;
export const MS_REMOUNT = 32;
export const MS_NOATIME = 1024;
export const MS_NODIRATIME = 2048;
export const MS_BIND = 4096;
export const MS_REC = 16384;
export const MS_PRIVATE = 1 << 18;
export const MS_RELATIME = 1 << 21;
export const MNT_DETACH = 2;
export const S_IFREG = 0o100000;

// statvfs f_flag bits (ST_*) have the same values as the MS_* flags above.
/** Flags of a mount that an unprivileged remount must keep ("locked"). */
export const LOCKED_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME |
  MS_NODIRATIME | MS_RELATIME | MS_RDONLY;

export const PR_SET_PDEATHSIG = 1;
export const PR_SET_NO_NEW_PRIVS = 38;

export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_NOFOLLOW = 0o400000;
export const O_RDWR = 2;
export const O_DIRECTORY = 0o200000;
export const O_CLOEXEC = 0o2000000;
export const O_PATH = 0o10000000;
export const O_NOCTTY = 0o400;
export const SIG_BLOCK = 0;
export const SIG_SETMASK = 2;
export const SIG_DFL = 0n;
export const SIG_IGN = 1n;
export const WNOHANG = 1;
/** poll(2)'s "data to read" event. */
export const POLLIN = 0x1;

export const PR_CAP_AMBIENT = 47;
export const PR_CAP_AMBIENT_RAISE = 2;
export const CAP_SYS_ADMIN = 21;
export const LINUX_CAPABILITY_VERSION_3 = 0x20080522;

export const SIGNALS: Record<string, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGTERM: 15,
};

// glibc has no pivot_root() wrapper, so it goes through syscall(2); the
// number depends on the architecture.
const SYS_PIVOT_ROOT: Record<string, number> = { "x86_64": 155, "aarch64": 41 };

export function sysPivotRoot(): number {
  const n = SYS_PIVOT_ROOT[Deno.build.arch];
  if (n === undefined) {
    throw new Error(
      `internal error: no pivot_root number for ${Deno.build.arch}`,
    );
  }
  return n;
}

// errno values (asm-generic, same on x86_64 and aarch64) that den tests for.
export const ENOENT = 2;
export const EINTR = 4;
export const EAGAIN = 11;
export const EADDRINUSE = 98;
export const ECONNRESET = 104;
export const ECONNREFUSED = 111;

/** errno values and their names. */
export const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  4: "EINTR",
  5: "EIO",
  7: "E2BIG",
  8: "ENOEXEC",
  9: "EBADF",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  16: "EBUSY",
  17: "EEXIST",
  18: "EXDEV",
  19: "ENODEV",
  20: "ENOTDIR",
  21: "EISDIR",
  22: "EINVAL",
  24: "EMFILE",
  26: "ETXTBSY",
  28: "ENOSPC",
  30: "EROFS",
  36: "ENAMETOOLONG",
  38: "ENOSYS",
  40: "ELOOP",
  95: "EOPNOTSUPP",
  98: "EADDRINUSE",
  104: "ECONNRESET",
  111: "ECONNREFUSED",
};

// fcntl.h, linux/stat.h: statx(2).
export const AT_FDCWD = -100;
export const AT_SYMLINK_NOFOLLOW = 0x100;
export const STATX_TYPE = 1;
