-- Runs once, when the postgres volume is first initialised: Apicurio Registry's database.
CREATE DATABASE registry OWNER lienthong;
