//! The ceiling for `bench/serve.sh`: an actix-web server whose one handler
//! answers a fixed JSON body, with the same worker count as `engage serve`.
//! `cargo run --release -p engage-serving --example trivial -- ADDR [WORKERS] [BYTES]`:
//! with BYTES the body is padded to about that size (to compare with
//! engage's answer of about 1 KB), else it is about 50 bytes.
use actix_web::{App, HttpResponse, HttpServer, web};
use serde::Serialize;

#[derive(Serialize)]
struct Answer<'a> {
    customer_id: String,
    churn_probability: f64,
    #[serde(skip_serializing_if = "str::is_empty")]
    padding: &'a str,
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8090".into());
    let workers: usize = args.next().and_then(|w| w.parse().ok()).unwrap_or(2);
    let bytes: usize = args.next().and_then(|b| b.parse().ok()).unwrap_or(0);
    let padding = web::Data::new("x".repeat(bytes.saturating_sub(50)));
    HttpServer::new(move || {
        App::new().app_data(padding.clone()).route(
            "/v1/customers/{id}/scores",
            web::get().to(|id: web::Path<String>, padding: web::Data<String>| async move {
                let answer =
                    Answer { customer_id: id.into_inner(), churn_probability: 0.5, padding: &padding };
                HttpResponse::Ok().json(answer)
            }),
        )
    })
    .workers(workers)
    .bind(addr)?
    .run()
    .await
}
