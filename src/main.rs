//! The `engage` command line: parses flags, calls one library function per
//! command, prints a short summary, maps errors to a non-zero exit.

mod cli;

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe extern "C" {
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_purge_delay` in mimalloc v3's `mimalloc.h` (the version the
/// `mimalloc` crate builds by default).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Its default there (`options.c`: 1000 ms).
const MI_PURGE_DELAY_DEFAULT: std::ffi::c_long = 1000;

/// Makes the allocator return freed memory to the OS at once instead of
/// after a second. For the nightly job at 1M customers this lowers peak RSS
/// from 8.3-8.5 GiB to 7.5 GiB for about 14 % more time (BENCHMARKS.md).
/// Left alone when `MIMALLOC_PURGE_DELAY` is set, or when the option does
/// not hold its documented default (another mimalloc version).
pub(crate) fn purge_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: plain getters and setters of mimalloc's option table.
    unsafe {
        if mi_option_get(MI_OPTION_PURGE_DELAY) == MI_PURGE_DELAY_DEFAULT {
            mi_option_set(MI_OPTION_PURGE_DELAY, 0);
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
