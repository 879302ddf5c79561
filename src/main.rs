fn main() {
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(0))
        .spawn(|| async {
            println!("hello from glommio");
        })
        .unwrap();
    ex.join().unwrap();
}
