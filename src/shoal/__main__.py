if __name__ == "__main__":  # not when a worker process started with spawn imports this module
    from shoal.cli.entry import main

    main()
