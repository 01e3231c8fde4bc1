//! The `engage` command line: parses flags, calls one library function per
//! command, prints a short summary, maps errors to a non-zero exit.

mod cli;

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::ffi::{c_int, c_long};

unsafe extern "C" {
    fn mi_version() -> c_int;
    fn mi_option_set(option: c_int, value: c_long);
    #[cfg(target_os = "linux")]
    fn prctl(option: c_int, ...) -> c_int;
}

/// The mimalloc the `mimalloc` crate builds by default (v3.3, `mi_version`
/// 303xx), whose option numbers (`mimalloc.h`) these are.
const MI_VERSION_MAJOR_MINOR: c_int = 303;
const MI_OPTION_PURGE_DELAY: c_int = 15;
const MI_OPTION_ALLOW_THP: c_int = 43;
/// `PR_SET_THP_DISABLE` in `linux/prctl.h`.
#[cfg(target_os = "linux")]
const PR_SET_THP_DISABLE: c_int = 41;

/// Keeps the process's resident memory close to what it uses, for the jobs
/// whose peak sizes the machine (the nightly job; any command under
/// `--memory-limit`):
/// - freed memory goes back to the OS at once instead of after a second
///   (purge delay 0): the nightly job at 1M customers peaks at 7.5 GiB
///   instead of 8.3-8.5 GiB for about 14 % more time;
/// - no transparent huge pages: mimalloc asks for them on its arenas, and a
///   2 MiB page is resident whole however little of it is used: at 1M
///   customers under a 4 GiB limit `engage identity` peaks at 1.09 GiB
///   instead of 1.21 GiB (its contract checks at 134 MiB instead of 299
///   MiB), in 48.4 s instead of 51.4 s; at 10M the nightly job at 2.55 GiB
///   instead of 3.2 to 4.2 GiB.
///
/// (BENCHMARKS.md.) Each is left alone when its `MIMALLOC_PURGE_DELAY` /
/// `MIMALLOC_ALLOW_THP` is set, and both with another mimalloc version.
pub(crate) fn keep_memory_close_to_use() {
    // SAFETY: mimalloc's version getter and option setter, and prctl with
    // an option that takes one integer and only sets a flag of this process.
    unsafe {
        if mi_version() / 100 != MI_VERSION_MAJOR_MINOR {
            return;
        }
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        }
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
            mi_option_set(MI_OPTION_ALLOW_THP, 0);
            #[cfg(target_os = "linux")]
            {
                let (on, unused): (std::ffi::c_ulong, std::ffi::c_ulong) = (1, 0);
                prctl(PR_SET_THP_DISABLE, on, unused, unused, unused);
            }
        }
    }
}

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            // Libraries often repeat their source's text in their own
            // (object_store four levels deep): a cause already said is skipped.
            let mut said = err.to_string();
            for cause in err.chain().skip(1) {
                let text = cause.to_string();
                if !said.contains(&text) {
                    eprintln!("  caused by: {text}");
                }
                said = text;
            }
            ExitCode::FAILURE
        }
    }
}
