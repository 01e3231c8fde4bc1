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

/// No transparent huge pages, for every command: mimalloc asks for them on
/// its arenas (this kernel's THP mode is `madvise`), and then each page it
/// takes back from the OS is faulted in as 2 MiB that the kernel zeroes
/// whole, and is resident whole however little of it is used.
/// `engage features` at 1M customers spent a quarter of its CPU zeroing
/// pages (`clear_page_erms` under mimalloc's page faults): 49.7 to 52.2 s
/// and up to 7.2 GiB with huge pages, 39.6 to 41.3 s and 6.2 GiB without; at 1M customers under
/// a 4 GiB limit `engage identity` peaks at 1.09 GiB instead of 1.21 GiB;
/// at 10M the nightly job at 2.55 GiB instead of 3.2 to 4.2 GiB
/// (BENCHMARKS.md). Left alone when `MIMALLOC_ALLOW_THP` is set, or with
/// another mimalloc version.
fn no_huge_pages() {
    // SAFETY: mimalloc's version getter and option setter, and prctl with
    // an option that takes one integer and only sets a flag of this process.
    unsafe {
        if mi_version() / 100 != MI_VERSION_MAJOR_MINOR || std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            return;
        }
        mi_option_set(MI_OPTION_ALLOW_THP, 0);
        #[cfg(target_os = "linux")]
        {
            let (on, unused): (std::ffi::c_ulong, std::ffi::c_ulong) = (1, 0);
            prctl(PR_SET_THP_DISABLE, on, unused, unused, unused);
        }
    }
}

/// Keeps the process's resident memory close to what it uses, for the jobs
/// whose peak sizes the machine (the nightly job; any command under
/// `--memory-limit`): freed memory goes back to the OS at once instead of
/// after a second (purge delay 0): the nightly job at 1M customers peaks at
/// 7.5 GiB instead of 8.3-8.5 GiB for about 14 % more time (BENCHMARKS.md).
/// Left alone when `MIMALLOC_PURGE_DELAY` is set, or with another mimalloc
/// version.
pub(crate) fn keep_memory_close_to_use() {
    // SAFETY: mimalloc's version getter and option setter.
    unsafe {
        if mi_version() / 100 == MI_VERSION_MAJOR_MINOR && std::env::var_os("MIMALLOC_PURGE_DELAY").is_none()
        {
            mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        }
    }
}

fn main() -> ExitCode {
    no_huge_pages();
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
