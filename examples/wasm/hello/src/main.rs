//! Prints its arguments, environment and the entries of `/`.
fn main() {
    println!("hello from wasm");
    for (i, a) in std::env::args().enumerate() {
        println!("arg[{i}]={a}");
    }
    let mut env: Vec<_> = std::env::vars().collect();
    env.sort();
    for (k, v) in env {
        println!("env {k}={v}");
    }
    match std::fs::read_dir("/") {
        Ok(rd) => {
            let mut names: Vec<_> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            println!("ls / : {}", names.join(" "));
        }
        Err(e) => println!("ls / : error: {e}"),
    }
}
