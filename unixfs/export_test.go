package unixfs

// CARAccept is the Accept header of a CAR request, for the tests.
const CARAccept = carAccept
