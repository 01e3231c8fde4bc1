//! Directories a run owns while it lives: spill directories ([`SpillDir`])
//! and checked-inputs entries (`crate::cache`). Each holds a lock file
//! (`flock`) its process keeps locked for as long as the directory is in
//! use; the operating system releases it when the process ends however it
//! ends (out of memory, a timeout, `kill -9`), so the next run can tell a
//! directory left behind from one in use and remove it.
//!
//! The lock file is created as `<lock>.new`, locked, and only then renamed
//! to `<lock>`: a directory's lock file is never seen unlocked while its
//! process lives. A run killed in between leaves a directory with an
//! unlocked `<lock>.new`, removed as left behind; one killed between
//! making the directory and its lock file (or while removing it) leaves
//! one without, removed once the process its name carries is gone from
//! this host. A sweep can catch a live run between creating `<lock>.new`
//! and locking it: it holds that file's lock while it removes the
//! directory (the live run's lock waits for it), and the live run, finding
//! its directory gone, makes it again.

use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::error::{Result, io};

/// `<prefix>-<pid>-<time>`: a name no other run takes.
pub fn run_name(prefix: &str) -> String {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.f");
    format!("{prefix}-{}-{stamp}", std::process::id())
}

/// The process that made `name`, if [`run_name`] made it
/// (`...-<pid>-<time>`).
fn run_pid(name: &str) -> Option<u32> {
    let mut parts = name.rsplitn(3, '-');
    let (Some(stamp), Some(pid), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    let stamped = stamp.len() > 8 && stamp.as_bytes()[8] == b'T';
    stamped.then(|| pid.parse().ok()).flatten()
}

/// Whether `name` was made by [`run_name`] in a process other than this
/// one (on NFS a lock is a POSIX lock, which a process does not conflict
/// with, so this process's own directories are never taken for left
/// behind).
pub(crate) fn another_runs(name: &str) -> bool {
    run_pid(name).is_some_and(|pid| pid != std::process::id())
}

/// Makes the directory `dir` with its lock file `lock` in it, locked
/// (shared or exclusive), and returns that lock. Fails if `dir` exists.
pub(crate) fn claim(dir: &Path, lock: &str, shared: bool) -> Result<File> {
    let (claim, owned) = (dir.join(format!("{lock}.new")), dir.join(lock));
    // Another run's sweep may remove the directory in the windows named in
    // the module's documentation; then it is made again.
    for _ in 0..64 {
        std::fs::create_dir(dir).map_err(io(dir))?;
        let made = File::create(&claim)
            .and_then(|file| if shared { file.lock_shared() } else { file.lock() }.map(|()| file))
            .and_then(|file| std::fs::rename(&claim, &owned).map(|()| file));
        match made {
            Ok(file) => return Ok(file),
            Err(e) if e.kind() == ErrorKind::NotFound && !dir.exists() => continue,
            Err(e) => {
                let _ = std::fs::remove_dir_all(dir);
                return Err(io(&owned)(e));
            }
        }
    }
    Err(io(dir)(std::io::Error::other("removed by other runs' sweeps as it was being made, 64 times")))
}

/// Removes `dir` if no live process holds its lock file `lock`; whether
/// it did. A directory that cannot be read or removed (another user's,
/// say) stays.
pub(crate) fn remove_if_left_behind(dir: &Path, lock: &str) -> bool {
    let held = |path: PathBuf| match File::open(path) {
        // Kept locked while the directory goes: a live run that has just
        // made this file waits for the lock, then makes its directory again.
        Ok(file) => Some(file.try_lock().is_err() || std::fs::remove_dir_all(dir).is_err()),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(_) => Some(true),
    };
    let kept = held(dir.join(lock))
        .or_else(|| held(dir.join(format!("{lock}.new"))))
        // Neither file: killed before it made one (or while removing its
        // directory), or about to make one. Removed once the process named
        // in it is gone from this host; a live run on another host sharing
        // the directory makes it again.
        .unwrap_or_else(|| {
            let name = dir.file_name().unwrap_or_default().to_string_lossy();
            let gone = run_pid(&name).is_some_and(|pid| !Path::new("/proc").join(pid.to_string()).exists());
            // (Its lock file may have got its name since it was looked for.)
            !gone || dir.join(lock).exists() || std::fs::remove_dir_all(dir).is_err()
        });
    !kept
}

/// A directory of spill files, removed when dropped.
///
/// Spill directories can hold gigabytes, so making one first removes the
/// `engage-*` directories beside it that runs which did not finish left
/// behind (see the module's documentation). A directory whose name is not
/// a run's (`engage-<what>-<pid>-<time>`) is left alone.
#[derive(Debug)]
pub struct SpillDir {
    path: PathBuf,
    _owner: File,
}

/// The file a live spill directory's process holds locked.
const OWNER_FILE: &str = ".owner";

impl SpillDir {
    /// A fresh directory `engage-<what>-...` under `base` (the system temp
    /// directory if None), absolute, after the directories there that
    /// runs which did not finish left behind are removed.
    pub fn create(base: Option<&Path>, what: &str) -> Result<SpillDir> {
        let base = base.map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&base).map_err(io(&base))?;
        remove_left_behind(&base);
        let dir = std::path::absolute(base.join(SpillDir::name(what))).map_err(io(&base))?;
        let owner = claim(&dir, OWNER_FILE, false)?;
        Ok(SpillDir { path: dir, _owner: owner })
    }

    /// `engage-<what>-<pid>-<time>`: a name no other run takes.
    pub fn name(what: &str) -> String {
        run_name(&format!("engage-{what}"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes the spill directories under `base` that runs which did not
/// finish left behind, and says so on stderr.
fn remove_left_behind(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("engage-")
            && another_runs(&name)
            && remove_if_left_behind(&entry.path(), OWNER_FILE)
        {
            eprintln!("engage: removed {}, left behind by a run that did not finish", entry.path().display());
        }
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spill_directories_of_runs_that_ended_are_removed_by_the_next() {
        let base = std::env::temp_dir().join(format!("spill-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let live = SpillDir::create(Some(&base), "events").unwrap();
        std::fs::write(live.path().join("events.parquet"), b"rows").unwrap();
        // What killed runs leave: their files and an owner file nobody
        // holds; killed before the owner file had its name; killed before
        // it had one at all, or as it removed its directory.
        let dead = base.join("engage-events-1-20260101T000000.0");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(OWNER_FILE), b"").unwrap();
        std::fs::write(dead.join("events.parquet"), b"rows").unwrap();
        let unnamed = base.join("engage-ingest-2-20260101T000000.0");
        std::fs::create_dir(&unnamed).unwrap();
        std::fs::write(unnamed.join(format!("{OWNER_FILE}.new")), b"").unwrap();
        // (No process has a number past the kernel's largest, 2^22.)
        let bare = base.join("engage-engine-4194399-20260101T000000.0");
        std::fs::create_dir(&bare).unwrap();
        std::fs::write(bare.join("events.parquet"), b"rows").unwrap();
        // Other runs', alive: one holds its owner file locked, one is
        // between locking it and giving it its name.
        let other = base.join("engage-events-4194304-20260101T000000.0");
        std::fs::create_dir(&other).unwrap();
        let held = File::create(other.join(OWNER_FILE)).unwrap();
        held.lock().unwrap();
        let naming = base.join("engage-events-4194305-20260101T000000.0");
        std::fs::create_dir(&naming).unwrap();
        let naming_held = File::create(naming.join(format!("{OWNER_FILE}.new"))).unwrap();
        naming_held.lock().unwrap();
        // And one about to make its owner file (process 1 is always alive).
        let making = base.join("engage-events-1-20260101T000000.1");
        std::fs::create_dir(&making).unwrap();
        // Not a spill directory of a run: not named like one, or not engage's.
        let unowned = base.join("engage-notes");
        let foreign = base.join("other");
        for dir in [&unowned, &foreign] {
            std::fs::create_dir(dir).unwrap();
        }
        std::fs::write(foreign.join(OWNER_FILE), b"").unwrap();

        let next = SpillDir::create(Some(&base), "ingest").unwrap();
        for dir in [&dead, &unnamed, &bare] {
            assert!(!dir.exists(), "{} is removed", dir.display());
        }
        for dir in [live.path(), next.path(), &other, &naming, &making, &unowned, &foreign] {
            assert!(dir.is_dir(), "{} stays", dir.display());
        }
        assert!(live.path().join("events.parquet").is_file());
        let live_path = live.path().to_path_buf();
        drop(live);
        assert!(!live_path.exists(), "removed when dropped");
        drop(next);
        // Once its process is gone, the other run's directory goes too.
        drop(held);
        drop(SpillDir::create(Some(&base), "events").unwrap());
        assert!(!other.exists());
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// A sweep running all the time on the directory a run is claiming,
    /// so that it catches it in every window: the directory survives as
    /// long as its lock is held, and goes once it is released.
    #[test]
    fn a_sweep_never_removes_a_claimed_directory() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let base = std::env::temp_dir().join(format!("claim-race-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let run = |i: usize| base.join(format!("engage-test-{}-20260101T000000.{i}", std::process::id()));
        let (current, done) = (AtomicUsize::new(0), AtomicBool::new(false));
        let removed = std::thread::scope(|s| {
            let sweeper = s.spawn(|| {
                let mut removed = 0;
                while !done.load(Ordering::Relaxed) {
                    removed +=
                        usize::from(remove_if_left_behind(&run(current.load(Ordering::Relaxed)), ".owner"));
                }
                removed
            });
            // Stops the sweep however the loop below ends.
            struct Stop<'a>(&'a AtomicBool);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let stop = Stop(&done);
            for i in 0..2000 {
                current.store(i, Ordering::Relaxed);
                let lock = claim(&run(i), ".owner", i % 2 == 0).unwrap();
                std::fs::write(run(i).join("spill"), b"rows").unwrap();
                assert!(run(i).join(".owner").is_file() && run(i).join("spill").is_file());
                drop(lock);
                while run(i).exists() {
                    std::thread::yield_now();
                }
            }
            drop(stop);
            sweeper.join().unwrap()
        });
        // More when it caught a claim before its lock and it was made again.
        assert!(removed >= 2000, "the sweep removes each directory once it is released: {removed}");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn run_names_are_told_from_others() {
        assert!(another_runs("engage-events-1-20260101T000000.0"));
        assert!(another_runs("entry-77-20261207T231500.123"));
        assert!(!another_runs(&SpillDir::name("events")), "this process's own");
        for name in ["engage-notes", "engage-a-b-c", "engage-x-12-notatime", "engage--20260101T0"] {
            assert!(!another_runs(name), "{name}");
        }
    }
}
