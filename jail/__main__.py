from jail.cli import main

main()
