//! The ceiling for `bench/serve.sh`: an actix-web server whose one handler
//! answers a fixed small JSON body, with the same worker count as `engage
//! serve`. `cargo run --release -p engage-serving --example trivial -- ADDR`
use actix_web::{App, HttpResponse, HttpServer, web};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8090".into());
    let workers: usize = std::env::args().nth(2).and_then(|w| w.parse().ok()).unwrap_or(2);
    HttpServer::new(|| {
        App::new().route(
            "/v1/customers/{id}/scores",
            web::get().to(|id: web::Path<String>| async move {
                HttpResponse::Ok()
                    .json(serde_json::json!({"customer_id": id.into_inner(), "churn_probability": 0.5}))
            }),
        )
    })
    .workers(workers)
    .bind(addr)?
    .run()
    .await
}
