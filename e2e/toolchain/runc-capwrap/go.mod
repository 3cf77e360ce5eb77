module synod.local/runc-capwrap

go 1.22
