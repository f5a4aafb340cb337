from jail.fastrun import main

main()
